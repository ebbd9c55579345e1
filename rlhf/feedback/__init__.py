"""Feedback: the seam through which preferences enter the pipeline.

Any source of preferences is a ``Labeler`` (rank K responses to a prompt; ``compare`` two):
the embedded task's simulated people and gold rubric today (rlhf.embedded.labelers), a human
labeling app, or an AI judge (``rlhf.feedback.judges``: a local model or an HTTP endpoint
under a constitution of principles, docs/ai_feedback.md). Around it: ranking a policy's own samples
(``rank_policy_samples``) and the labelers' agreement (Cohen's kappa).
"""

from rlhf.feedback.agreement import agreement_matrix, cohens_kappa, pairwise_agreement
from rlhf.feedback.labeler import Labeler, compare, ranking_record
from rlhf.feedback.policy_samples import rank_policy_samples
from rlhf.feedback.constitution import Constitution, Principle, load_constitution
from rlhf.feedback.judges import Judge, JudgeLabeler, LocalJudge, Query, judge_rankings

__all__ = ["Constitution", "Judge", "JudgeLabeler", "LocalJudge", "Principle", "Query", "judge_rankings",
           "load_constitution", "Labeler", "agreement_matrix", "cohens_kappa", "compare", "pairwise_agreement", "rank_policy_samples",
           "ranking_record"]
