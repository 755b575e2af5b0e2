"""avag_ros.runtime.memory's allocator policy, checked by what glibc reports of its own mappings (mallinfo2)."""
import ctypes
import subprocess
import sys

from avag_ros.runtime.memory import model_blocks_mapped

LIBC = ctypes.CDLL(None)
LIBC.malloc.restype = ctypes.c_void_p
LIBC.free.argtypes = [ctypes.c_void_p]
BLOCK_BYTES = 1 << 20  # the size of a model tensor or a 640x480 frame


class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                     "fsmblks", "uordblks", "fordblks", "keepcost")]


LIBC.mallinfo2.restype = MallInfo2


def allocated_alone(size: int) -> bool:
    """Whether malloc serves `size` bytes with a mapping of its own, by glibc's count of the bytes so mapped
    (a block carved from the heap or an arena leaves it unchanged)."""
    before = LIBC.mallinfo2().hblkhd
    address = LIBC.malloc(size)
    try:
        return LIBC.mallinfo2().hblkhd - before >= size
    finally:
        LIBC.free(address)


def check_large_blocks_get_their_own_mapping_only_while_a_model_loads():
    LIBC.free(LIBC.malloc(8 * BLOCK_BYTES))  # freeing a mapped block is what raises glibc's own threshold
    with model_blocks_mapped():
        assert allocated_alone(BLOCK_BYTES)
    assert not allocated_alone(BLOCK_BYTES)  # inference and frames reuse heap blocks, no page faults per frame


def test_large_blocks_get_their_own_mapping_only_while_a_model_loads():
    """In a fresh interpreter: malloc serves a request from a large enough free chunk before it maps anything, so
    what earlier tests in this process left free would decide the outcome."""
    done = subprocess.run([sys.executable, "-c", "import test_memory; "
                           "test_memory.check_large_blocks_get_their_own_mapping_only_while_a_model_loads()"],
                          cwd=__file__.rsplit("/", 1)[0], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr

