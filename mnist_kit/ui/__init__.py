"""The drawing pads: the web page of `mnist-kit ui` (server.py, static/) and the desktop window of `mnist-kit pad`."""
