"""`pip install .` from a copy of the working tree into a new virtual environment gives the
three commands, and they run (with the dependencies pip installed beside them)."""

import shutil
import subprocess
import venv

from genisys.devconsul import free_port
from tests.support import ROOT


def test_pip_install_gives_the_commands(tmp_path):
    source = tmp_path / "genisys"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", ".tools", "build", "*.egg-info", "__pycache__", ".pytest_cache"))
    venv.create(tmp_path / "venv", with_pip=True)
    bin_dir = tmp_path / "venv" / "bin"
    subprocess.run([bin_dir / "pip", "install", "--quiet", "--disable-pip-version-check",
                    str(source)], check=True, timeout=600, cwd=tmp_path)

    nothing = f"127.0.0.1:{free_port()}"
    result = subprocess.run([bin_dir / "genisys", "leader", "--addr", nothing],
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert (result.returncode, result.stderr) == (
        3, f"genisys: cannot reach the Genisys API at http://{nothing}: Connection refused.\n")
    for name in ("genisys", "genisys-connector-process", "genisys-connector-docker"):
        result = subprocess.run([bin_dir / name, "--help"], capture_output=True, text=True,
                                timeout=60, cwd=tmp_path)
        assert result.returncode == 0 and "--log-format" in result.stdout, name
