"""Record the quickstart numbers that tests/test_regression_quickstart.py pins (run from a checkout:
``python tests/data/record_quickstart.py OUTDIR``; v0.1 had no burn-in, so no warmup_rewards key)."""
import json
import sys
from pathlib import Path

from distillctl import engine, plugins
from distillctl.cli.distill_cmd import build_config

plugins.reset_plugins(plugins.load_plugins(include_entry_points=False))
out = Path(sys.argv[1])
cfg, _ = build_config("quickstart", {"policy": {"name": "fixed-order"}}, ["train.episodes=4", "eval.samples=200", "data.workers=0"])
rep = engine.run(cfg, out / "run", overwrite=True)
doc = {"arms": [e["arm"] for e in rep["episodes"]], "rewards": [e["reward"] for e in rep["episodes"]],
       "probe_losses": [e["probe_loss"] for e in rep["episodes"]], "initial_probe": rep["initial_probe"]["total"],
       "final_probe": {k: v for k, v in rep["final_probe"].items() if "/" not in k or k.startswith("lw/")},
       "eval": rep["eval"]}
(out / "numbers.json").write_text(json.dumps(doc, indent=1))
print(json.dumps(doc)[:400])
