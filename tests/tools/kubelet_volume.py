"""A directory laid out as kubelet lays out a Secret, ConfigMap or projected volume, for the tests
of certificate rotation (tests/integration/test_reload_and_drain.py, tests/deploy).

The data sits in a timestamped directory, `..data` is a symlink to it and each file a symlink
through `..data`. A new version is published as kubelet's AtomicWriter does it: a new directory,
a new symlink renamed over `..data` in one step, then the old directory removed. Files may be in
subdirectories ("tls/tls.crt"): the top-level entry is the symlink, as in a projected volume.
"""

import os
import shutil
from pathlib import Path


def publish(volume, files, version):
    """files: {relative path in the volume: source file}; version: a number, new each time."""
    volume = Path(volume)
    volume.mkdir(exist_ok=True)
    data = volume / ("..2026_11_27_v%d" % version)
    data.mkdir()
    for name, src in files.items():
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, data / name)
    old = os.readlink(volume / "..data") if (volume / "..data").is_symlink() else None
    os.symlink(data.name, volume / "..data_tmp")
    os.rename(volume / "..data_tmp", volume / "..data")
    for top in {Path(name).parts[0] for name in files}:
        if not (volume / top).is_symlink():
            os.symlink(os.path.join("..data", top), volume / top)
    if old:
        shutil.rmtree(volume / old)
    return volume
