#!/bin/sh
# The image's entrypoint (under tini). KServe's TorchServe runtime passes `torchserve --start ...` as the
# container's arguments, without --foreground: add it, so TorchServe stays the container's main process, the
# container lives exactly as long as it does, and a stop reaches it. Any other command runs as given.
set -e
if [ "$1" = torchserve ]; then
    case " $* " in
        *" --foreground "*) ;;
        *) set -- "$@" --foreground ;;
    esac
fi
exec "$@"
