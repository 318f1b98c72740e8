"""Data pipeline: corpus readers -> MDS shards -> StreamingDataset -> MLM masking -> best-fit packing."""

from modernenc.data.batch_size_warmup import BatchSizeWarmup, batch_size_at, split_global_batch
from modernenc.data.corpus import Document, iter_documents
from modernenc.data.decontaminate import Decontaminator, load_eval_sentences
from modernenc.data.masking import (
    DEFAULT_EVAL_MLM_PROBABILITY,
    DEFAULT_TRAIN_MLM_PROBABILITY,
    MLMMasker,
    load_tokenizer,
    mask_tokens,
    special_and_random_ids,
)
from modernenc.data.mds import (
    CorpusReport,
    assign_split,
    check_output_dir,
    chunk_tokens,
    staged_output_dir,
    write_mds_corpus,
)
from modernenc.data.packing import IGNORE_INDEX, SequencePacker, pack_sequences
from modernenc.data.streaming_dataset import (
    PackedStreamingDataset,
    ShardReadError,
    TokenStreamingDataset,
    build_packed_mlm_stream,
)

__all__ = [
    "DEFAULT_EVAL_MLM_PROBABILITY",
    "DEFAULT_TRAIN_MLM_PROBABILITY",
    "IGNORE_INDEX",
    "BatchSizeWarmup",
    "CorpusReport",
    "Decontaminator",
    "Document",
    "MLMMasker",
    "PackedStreamingDataset",
    "SequencePacker",
    "ShardReadError",
    "TokenStreamingDataset",
    "assign_split",
    "batch_size_at",
    "build_packed_mlm_stream",
    "check_output_dir",
    "chunk_tokens",
    "iter_documents",
    "load_eval_sentences",
    "load_tokenizer",
    "mask_tokens",
    "pack_sequences",
    "special_and_random_ids",
    "staged_output_dir",
    "split_global_batch",
    "write_mds_corpus",
]
