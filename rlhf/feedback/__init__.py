"""Feedback: the seam through which preferences enter the pipeline.

Any source of preferences is a ``Labeler`` (rank K responses to a prompt; ``compare`` two):
the embedded task's simulated people and gold rubric today (rlhf.embedded.labelers), a human
labeling app or an AI judge tomorrow. Around it: ranking a policy's own samples
(``rank_policy_samples``) and the labelers' agreement (Cohen's kappa).
"""

from rlhf.feedback.agreement import agreement_matrix, cohens_kappa, pairwise_agreement
from rlhf.feedback.labeler import Labeler, compare, ranking_record
from rlhf.feedback.policy_samples import rank_policy_samples

__all__ = ["Labeler", "agreement_matrix", "cohens_kappa", "compare", "pairwise_agreement", "rank_policy_samples",
           "ranking_record"]
