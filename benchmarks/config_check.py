"""`nndiff check-config`: the whole config, as `snakemake -n` checks it (benchmarks/workflow.py)."""
from __future__ import annotations

from pathlib import Path


def check_config_file(config: str) -> Path:
    """Validate a profile name or config YAML: the schema, then every method's options, variants, ablations, the
    labels reports name and the splits. Errors are one line naming the file. Returns the file checked."""
    import yaml

    from benchmarks.config import profile_path
    from benchmarks.workflow import check_config
    path = profile_path(config)
    try:
        cfg = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark, start = getattr(e, "problem_mark", None), getattr(e, "context_mark", None)
        where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark else str(path)
        context = f"{e.context} (line {start.line + 1}): " if start and getattr(e, "context", None) else ""
        raise ValueError(f"{where}: not valid YAML: {context}{getattr(e, 'problem', None) or e}") from None
    try:
        check_config(cfg)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    return path
