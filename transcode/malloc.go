package transcode

// #include <malloc.h>
import "C"

import "sync"

var arenaOnce sync.Once

// limitMallocArenas caps glibc's per-thread malloc arenas. FFmpeg and x264
// start threads per codec, and each new thread may get a fresh 64 MB arena
// whose freed memory is not returned to the OS: a server that starts and
// stops many jobs then holds memory it no longer uses.
func limitMallocArenas() {
	arenaOnce.Do(func() { C.mallopt(C.M_ARENA_MAX, 4) })
}

// releaseFreedMemory hands memory freed by a finished job back to the OS.
func releaseFreedMemory() { C.malloc_trim(0) }
