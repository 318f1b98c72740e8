"""Data pipeline: corpus readers -> MDS shards -> StreamingDataset -> MLM masking -> best-fit packing."""

from modernenc.utils.lazy import lazy_exports

# name -> the module that defines it; imported on first use (torch takes seconds to load)
_EXPORTS = {
    "BatchSizeWarmup": "modernenc.data.batch_size_warmup",
    "batch_size_at": "modernenc.data.batch_size_warmup",
    "split_global_batch": "modernenc.data.batch_size_warmup",
    "Document": "modernenc.data.corpus",
    "iter_documents": "modernenc.data.corpus",
    "Decontaminator": "modernenc.data.decontaminate",
    "load_eval_sentences": "modernenc.data.decontaminate",
    "DEFAULT_EVAL_MLM_PROBABILITY": "modernenc.data.masking",
    "DEFAULT_TRAIN_MLM_PROBABILITY": "modernenc.data.masking",
    "MLMMasker": "modernenc.data.masking",
    "load_tokenizer": "modernenc.data.masking",
    "mask_tokens": "modernenc.data.masking",
    "special_and_random_ids": "modernenc.data.masking",
    "CorpusReport": "modernenc.data.mds",
    "assign_split": "modernenc.data.mds",
    "chunk_tokens": "modernenc.data.mds",
    "write_mds_corpus": "modernenc.data.mds",
    "SequencePacker": "modernenc.data.packing",
    "pack_sequences": "modernenc.data.packing",
    "PackedStreamingDataset": "modernenc.data.streaming_dataset",
    "ShardReadError": "modernenc.data.streaming_dataset",
    "TokenStreamingDataset": "modernenc.data.streaming_dataset",
    "build_packed_mlm_stream": "modernenc.data.streaming_dataset",
    "IGNORE_INDEX": "modernenc.model.config",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = list(_EXPORTS)
