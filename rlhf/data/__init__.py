"""Data: read records (JSONL, JSON, saved datasets), normalize them into demonstrations,
comparisons, rankings and prompts, tokenize them and pad them into batches. See docs/data.md."""

from rlhf.data.collate import collate_pairs, collate_prompts, collate_sft, length_grouped_batches, pad_sequences
from rlhf.data.errors import DataError
from rlhf.data.formats import (Comparison, Demonstration, PromptRecord, Ranking, RecordList,
                               load_comparisons, load_demonstrations, load_gsm8k_solution_comparisons,
                               load_prompts, load_rankings, parse_comparison, parse_demonstration, parse_prompt,
                               parse_ranking, rankings_to_comparisons)
from rlhf.data.records import Source, read_records
from rlhf.data.templates import ASSISTANT, HUMAN, render_default, render_prompt, response_text, split_hh_dialogue
from rlhf.data.tokenize import (IGNORE_INDEX, tokenize_comparisons, tokenize_demonstrations, tokenize_prompts,
                                truncate_pair)

__all__ = [
    "DataError", "Source", "read_records",
    "Demonstration", "Comparison", "Ranking", "PromptRecord", "RecordList",
    "parse_demonstration", "parse_comparison", "parse_ranking", "parse_prompt", "rankings_to_comparisons",
    "load_demonstrations", "load_comparisons", "load_rankings", "load_prompts", "load_gsm8k_solution_comparisons",
    "HUMAN", "ASSISTANT", "render_default", "render_prompt", "response_text", "split_hh_dialogue",
    "IGNORE_INDEX", "truncate_pair", "tokenize_demonstrations", "tokenize_comparisons", "tokenize_prompts",
    "pad_sequences", "collate_sft", "collate_pairs", "collate_prompts", "length_grouped_batches",
]
