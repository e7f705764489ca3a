"""The miniature paper run (tools/paper_smoke.py, `make paper-smoke`) on a small chapter: the
training run is capped and reported with its memory, a failing claim is printed as skipped and
the chapter goes on, and any other error still fails the run."""

import importlib.util
import sys

from tinybook import HEADER

from conftest import ROOT

CHAPTER = (
    HEADER
    + """
# A small chapter

```{{code-cell}} ipython3
import jax.numpy as jnp
import optax
from conserved import config, training

steps = config.choose(quick=5, full=50, paper=5000)
result = training.fit(
    lambda w, b, k: jnp.sum((w - 1.0) ** 2), jnp.zeros(3), optax.adam(0.1),
    steps=steps, key=config.key(0), progress=False,
)
assert result.losses[-1] < 1e-3, "needs the trained model"
assert len(result.losses) <= 2
print("after the claims")
{extra}
```
"""
)


def _tool():
    spec = importlib.util.spec_from_file_location("paper_smoke", ROOT / "tools" / "paper_smoke.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["paper_smoke"] = module
    spec.loader.exec_module(module)
    return module


def test_miniature_run_skips_failing_claims_visibly_and_fails_on_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT / "lib"))
    monkeypatch.setenv("CONSERVED_JAX_CACHE", "off")
    tool = _tool()
    good = tmp_path / "01_good.md"
    good.write_text(CHAPTER.format(extra=""))
    report = tool.run_chapter(good, max_steps=2, timeout=300)
    assert report["error"] is None
    assert report["runs"] == 1
    # the first claim fails after two steps and is reported; the second holds and is checked
    assert report["skipped"] == ["assert result.losses[-1] < 0.001"]
    assert report["peak_mib"] is not None and report["peak_mib"] > 0

    bad = tmp_path / "02_bad.md"
    bad.write_text(CHAPTER.format(extra="jnp.ones(3).reshape(2, 2)"))
    report = tool.run_chapter(bad, max_steps=2, timeout=300)
    assert report["error"] is not None and "TypeError" in report["error"]
    assert tool.main([str(good), str(bad)]) == 1
