"""The ``.rdk`` codec: the container format, guards against crafted input, and file coding.

Modules: :mod:`container` (the byte format, model-free), :mod:`determinism`
(threads, eval mode), :mod:`rdkit_ae.guards` (crafted checkpoints and strings),
:mod:`identity` (model id), :mod:`layout` (what a quantizer puts in a file),
:mod:`arrays` (one image <-> bytes), :mod:`coder` (:class:`Codec`, a loaded
checkpoint), :mod:`files` (image files <-> ``.rdk`` files).
"""

from rdkit_ae.codec.arrays import compress_array, decompress_bytes, reconstruct_array
from rdkit_ae.codec.coder import Codec
from rdkit_ae.codec.determinism import CODEC_THREADS, fixed_threads
from rdkit_ae.codec.files import MAX_FILE_BYTES, Report, compress_file, decompress_file, encode_image, read_rdk
from rdkit_ae.codec.identity import ModelMismatchError, model_id
from rdkit_ae.codec.layout import latent_layout
from rdkit_ae.guards import check_model, guard_entropy_coders

__all__ = [
    "CODEC_THREADS",
    "MAX_FILE_BYTES",
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
    "guard_entropy_coders",
    "latent_layout",
    "model_id",
    "read_rdk",
    "reconstruct_array",
]
