"""Human feedback, simulated: labelers who write demonstrations and rank responses with noise
and a length bias, the data files they produce, and measures of their agreement."""

from rlhf.feedback.agreement import cohens_kappa, pairwise_agreement
from rlhf.feedback.labelers import (
    SimulatedLabeler, candidate_responses, generate_task_data, gold_labeler, labeler_pool, rankings_to_comparisons,
    write_jsonl,
)

__all__ = [
    "SimulatedLabeler", "candidate_responses", "cohens_kappa", "generate_task_data", "gold_labeler",
    "labeler_pool", "pairwise_agreement", "rankings_to_comparisons", "write_jsonl",
]
