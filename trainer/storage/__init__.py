"""The one file layer: local paths, `gs://` URLs and Vertex AI's `/gcs/` mount through fsspec.

The names every caller uses, re-exported from the modules that hold them.
"""

from trainer.storage.reads import (  # noqa: F401
    CONFIG_LIMIT, check_output, check_regular, check_size, check_writable, confine, exists,
    expand, get_file, is_local, join, normalize, open_read, out_of_space, put_file, read_bytes,
    read_rows_into, read_text, remove, remove_tree, within, _fs, _PREADV)
