"""The ``.rdk`` codec: the container format, guards against crafted input, and file coding."""

from rdkit_ae.codec.coder import (
    Codec,
    ModelMismatchError,
    Report,
    check_model,
    compress_array,
    compress_file,
    decompress_bytes,
    decompress_file,
    encode_image,
    fixed_threads,
    model_id,
    read_rdk,
    reconstruct_array,
)

__all__ = [
    "Codec",
    "ModelMismatchError",
    "Report",
    "check_model",
    "compress_array",
    "compress_file",
    "decompress_bytes",
    "decompress_file",
    "encode_image",
    "fixed_threads",
    "model_id",
    "read_rdk",
    "reconstruct_array",
]
