"""Data: read records (JSONL, JSON, saved datasets), normalize them into demonstrations,
comparisons, rankings and prompts, tokenize them and pad them into batches. See docs/data.md."""

from rlhf.data.collate import collate_pairs, collate_prompts, collate_sft, length_grouped_batches, pad_sequences
from rlhf.data.errors import DataError
from rlhf.data.formats import (Comparison, Demonstration, PromptRecord, Ranking, RecordList,
                               load_comparisons, load_demonstrations, load_gsm8k_solution_comparisons,
                               load_prompts, load_rankings, parse_comparison, parse_demonstration, parse_prompt,
                               parse_ranking, rankings_to_comparisons)
from rlhf.data.records import Source, read_records
from rlhf.data.report import (describe_formats, format_counts, main_format, prompt_truncation_message,
                              truncation_message, unused_template_message, warn_if_template_unused)
from rlhf.data.templates import (ASSISTANT, CHAT_TEMPLATE, DEFAULT_TEMPLATE, HH, HUMAN, TEXT, hh_to_messages,
                                 render_default, render_prompt, response_text, split_hh_dialogue, template_head)
from rlhf.data.tokenize import (IGNORE_INDEX, PROMPT_TRUNCATION_MODES, tokenize_comparisons, tokenize_demonstrations,
                                tokenize_prompts, truncate_pair)

__all__ = [
    "DataError", "Source", "read_records",
    "Demonstration", "Comparison", "Ranking", "PromptRecord", "RecordList",
    "parse_demonstration", "parse_comparison", "parse_ranking", "parse_prompt", "rankings_to_comparisons",
    "load_demonstrations", "load_comparisons", "load_rankings", "load_prompts", "load_gsm8k_solution_comparisons",
    "HUMAN", "ASSISTANT", "render_default", "render_prompt", "response_text", "split_hh_dialogue",
    "hh_to_messages", "template_head", "TEXT", "HH", "CHAT_TEMPLATE", "DEFAULT_TEMPLATE",
    "format_counts", "describe_formats", "main_format", "unused_template_message", "warn_if_template_unused",
    "truncation_message", "prompt_truncation_message",
    "IGNORE_INDEX", "PROMPT_TRUNCATION_MODES", "truncate_pair", "tokenize_demonstrations", "tokenize_comparisons",
    "tokenize_prompts",
    "pad_sequences", "collate_sft", "collate_pairs", "collate_prompts", "length_grouped_batches",
]
