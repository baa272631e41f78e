"""The one file layer: local paths, `gs://` URLs and Vertex AI's `/gcs/` mount through fsspec.

Only re-exports the names its callers use; each lives in the module of its job:
- `paths`: where a path lives and the fsspec file system that serves it;
- `faults`: a storage library's exceptions as one error line, and what counts as a full disk;
- `guards`: special files, links out of a data folder and oversized files refused;
- `reads`: whole files within their bound, open files, downloads, rows straight into a buffer;
- `listing`: paths and globs resolved to files;
- `writes`: the one write probe, whole-file publishing, deletion;
- `gcs`: the upload that a bucket checks against the file's MD5;
- `options`: credentials and the retry budget; `rundir`: a run's folder; `hdf5`: HDF5 files.
"""

from trainer.storage.faults import out_of_space
from trainer.storage.guards import (CONFIG_LIMIT, READ_LIMIT, TEXT_LIMIT, check_output,
                                    check_regular, check_size, confine, within)
from trainer.storage.listing import expand
from trainer.storage.paths import is_local, join, normalize, parent
from trainer.storage.reads import exists, get_file, open_read, read_bytes, read_rows_into, read_text
from trainer.storage.writes import check_writable, put_file, remove, remove_tree, unwritable

__all__ = ["CONFIG_LIMIT", "READ_LIMIT", "TEXT_LIMIT", "check_output", "check_regular", "check_size", "check_writable",
           "confine", "exists", "expand", "get_file", "is_local", "join", "normalize", "open_read",
           "out_of_space", "parent", "put_file", "read_bytes", "read_rows_into", "read_text",
           "remove", "remove_tree", "unwritable", "within"]
