"""Everything that scores a response: reward-model and function scorers with ensemble aggregation
(``scorers``, ``ensemble``), the user's reward functions, loaded and checked on every call
(``functions``), reward-model evaluation on held-out comparisons (``evaluation``), and
agreement of a reward with gold on a policy's own samples (``agreement``). Training the reward
model is a stage: ``rlhf.trainers.reward``."""
