"""Studies that check the paper's claims with our own runs (``emvos study``).

* :mod:`emvos.study.matching`: the matching study of the paper's Table 5: SM, EM and SM+EM
  networks trained alike over several seeds, SM also with bijective matching at test time, scored on
  held-out real sequences and on the distractor benchmark.

Example::

    from emvos.study import load_study_config, run_study

    config = load_study_config("matching", ["seeds=[0,1,2]"])
    run_study(config, Path("runs/study-matching"), command="...", doc=Path("docs/matching-study.md"))
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from emvos.lazy import lazy_exports

if TYPE_CHECKING:
    from emvos.study.config import StudyConfig, load_study_config, study_preset_names
    from emvos.study.matching import run_study
    from emvos.study.report import StudyResults, replace_section

__all__ = ["StudyConfig", "StudyResults", "load_study_config", "replace_section", "run_study", "study_preset_names"]

__getattr__, __dir__ = lazy_exports(__name__, {
    "emvos.study.config": ("StudyConfig", "load_study_config", "study_preset_names"),
    "emvos.study.matching": ("run_study",),
    "emvos.study.report": ("StudyResults", "replace_section"),
})
