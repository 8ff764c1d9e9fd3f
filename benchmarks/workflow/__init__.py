"""The workflow's reading of a config: its labels, what each label fits and generates with, the result files
a report needs, and `check_config`, which checks a whole config before any job starts.

`benchmarks/rules/common.smk` takes its names from here and `nndiff check-config` runs `check_config`, so
`snakemake -n` and the CLI reject the same configs with the same one-line messages, each naming a key path.

Labels (the {method} wildcard, a row of the tables):
- `methods:` keys: each its own fit of a registered method (`method:` names it when it differs from the label);
- `variants:` keys: generate with their `of` label's fit and change generate-time options only (e.g. the
  sampler), so a sampler sweep costs no extra fit;
- rows of `ablations.<name>.rows`: their own fit of the base label's options with `options` changed;
- `oracle` (`report: {oracle: true}`, the default): fine-tuned p-Models, no method.
- `<label>~unseen` (keys of `unseen.methods`): their own fit of a method label on the `unseen-zoo` p-Models
  (tasks of class half A only), for Table 3.

Each concept is its own module (labels, checks, and one per paper target); this package re-exports their public
names, so `from benchmarks import workflow as wf` reads `wf.results(...)`, `wf.check_config(...)`.
"""
from benchmarks.workflow.labels import *  # noqa: F401,F403
from benchmarks.workflow.checks import *  # noqa: F401,F403
from benchmarks.workflow.paper_figures import *  # noqa: F401,F403
from benchmarks.workflow.table5 import *  # noqa: F401,F403
from benchmarks.workflow.unseen import *  # noqa: F401,F403
from benchmarks.workflow.scaling import *  # noqa: F401,F403
from benchmarks.workflow.clip import *  # noqa: F401,F403
