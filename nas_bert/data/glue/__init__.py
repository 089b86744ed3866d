"""GLUE fine-tuning data: the task registry (``tasks``), the TSV reader (``tsv``), tokenization and
batches (``features``), the DataModule (``datamodule``) and GLUE-server submission files (``submission``).

The names below are the public API; ``nas_bert.data.glue.GlueDataModule`` is the Hydra target.
"""

from nas_bert.data.glue.datamodule import GlueDataModule
from nas_bert.data.glue.submission import submission_filename, write_glue_submission
from nas_bert.data.glue.tasks import GLUE_TASKS, GlueTask, TsvLayout, get_glue_task, normalize_task_name
from nas_bert.data.glue.tsv import find_task_dir, read_glue_split, read_glue_tsv, split_file

__all__ = [
    "GLUE_TASKS",
    "GlueDataModule",
    "GlueTask",
    "TsvLayout",
    "find_task_dir",
    "get_glue_task",
    "normalize_task_name",
    "read_glue_split",
    "read_glue_tsv",
    "split_file",
    "submission_filename",
    "write_glue_submission",
]
