"""Where the kit's TrueType fonts are: matplotlib's own (DejaVu, STIX, Computer Modern), installed with it, for
the training's synthetic letters and the held-out printed letters alike."""

from pathlib import Path


def font_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"
