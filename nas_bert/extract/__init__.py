"""Extract, then distill (ETD; Chen et al. 2021): a student, or the supernet's ops, started from the teacher's own
weights: `plan.py` chooses what of the teacher each part takes (layers, hidden dimensions, head units, FFN
neurons; at random or by importance, `importance.py`), `weights.py` copies it."""

from nas_bert.extract.plan import ExtractionError, Selection, TeacherShape, layer_map, random_selection
from nas_bert.extract.weights import extract_student, extract_supernet

__all__ = ["ExtractionError", "Selection", "TeacherShape", "extract_student", "extract_supernet", "layer_map",
           "random_selection"]
