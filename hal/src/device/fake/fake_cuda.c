/*
 * A fake CUDA driver: the subset of libcuda's API (cuda.h) that hal's `cuda` backend calls, with
 * the same C signatures, run on host memory. Tests compile it (cc -shared) and load it in place of
 * libcuda.so.1, so the backend's symbol loading, argument passing (the 64-byte IPC handle by
 * value), context handling and stream synchronization run on machines without a GPU.
 *
 * It is stricter than the real driver where that catches a backend bug:
 * - every call but cuInit/cuDeviceGetCount/cuDeviceGet/cuDevicePrimaryCtxRetain/cuCtx* needs a
 *   current context on the calling thread (CUDA_ERROR_INVALID_CONTEXT otherwise);
 * - a copy must be issued on a stream of the current context, and its device pointers must be
 *   memory of that context's device (cross-device copies only through cuMemcpyPeerAsync, whose
 *   contexts must match the pointers' devices);
 * - asynchronous copies run only at cuStreamSynchronize (a missing synchronization loses them);
 * - an IPC handle cannot be opened in the process that exported it.
 * Device memory is a memfd per allocation mapped into the process; IPC handles name the
 * exporter's pid and fd, and the importer maps /proc/<pid>/fd/<fd>.
 *
 * FAKE_CUDA_DEVICES (default 2) sets the device count (0: cuInit answers CUDA_ERROR_NO_DEVICE).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
typedef struct fake_ctx {
    int dev;
} *CUcontext;
struct fake_op {
    CUdeviceptr dst, src;
    size_t n;
    struct fake_op *next;
};
typedef struct fake_stream {
    CUcontext ctx;
    struct fake_op *head, *tail;
} *CUstream;
typedef struct {
    char reserved[64];
} CUipcMemHandle;

enum {
    SUCCESS = 0,
    INVALID_VALUE = 1,
    NOT_INITIALIZED = 3,
    NO_DEVICE = 100,
    INVALID_DEVICE = 101,
    INVALID_CONTEXT = 201,
    MAP_FAILED_ = 205,
    INVALID_HANDLE = 400,
    ALREADY_REGISTERED = 712,
    NOT_REGISTERED = 713,
};

#define MAX_DEV 8
#define MAX_ALLOCS 4096
#define MAX_REGS 256

struct fake_alloc {
    uintptr_t base;
    size_t size;
    int dev, fd, imported, live;
};
struct fake_reg {
    uintptr_t base;
    size_t size;
    int live;
};
struct fake_ipc {
    char magic[8];
    int32_t pid, fd;
    uint64_t size;
};

static struct fake_ctx ctxs[MAX_DEV];
static int ndev = -1;
static __thread CUcontext current;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct fake_alloc allocs[MAX_ALLOCS];
static struct fake_reg regs[MAX_REGS];

/* The device of the current context, or -1 (for tests: is the caller's context restored?). */
int fake_cuda_current_device(void) { return current ? current->dev : -1; }

static struct fake_alloc *find(uintptr_t p, size_t n) {
    for (int i = 0; i < MAX_ALLOCS; i++) {
        struct fake_alloc *a = &allocs[i];
        if (a->live && p >= a->base && p - a->base < a->size && n <= a->size - (p - a->base))
            return a;
    }
    return NULL;
}

static struct fake_alloc *find_base(uintptr_t p) {
    for (int i = 0; i < MAX_ALLOCS; i++)
        if (allocs[i].live && allocs[i].base == p) return &allocs[i];
    return NULL;
}

static struct fake_alloc *slot(void) {
    for (int i = 0; i < MAX_ALLOCS; i++)
        if (!allocs[i].live) return &allocs[i];
    return NULL;
}

#define NEED_INIT() \
    if (ndev < 0) return NOT_INITIALIZED
#define NEED_CTX()                      \
    NEED_INIT();                        \
    if (!current) return INVALID_CONTEXT

CUresult cuInit(unsigned int flags) {
    if (flags != 0) return INVALID_VALUE;
    const char *e = getenv("FAKE_CUDA_DEVICES");
    int n = e ? atoi(e) : 2;
    if (n <= 0) return NO_DEVICE;
    ndev = n > MAX_DEV ? MAX_DEV : n;
    for (int i = 0; i < ndev; i++) ctxs[i].dev = i;
    return SUCCESS;
}

CUresult cuDeviceGetCount(int *count) {
    NEED_INIT();
    if (!count) return INVALID_VALUE;
    *count = ndev;
    return SUCCESS;
}

CUresult cuDeviceGet(CUdevice *device, int ordinal) {
    NEED_INIT();
    if (!device) return INVALID_VALUE;
    if (ordinal < 0 || ordinal >= ndev) return INVALID_DEVICE;
    *device = ordinal;
    return SUCCESS;
}

CUresult cuDevicePrimaryCtxRetain(CUcontext *pctx, CUdevice dev) {
    NEED_INIT();
    if (!pctx) return INVALID_VALUE;
    if (dev < 0 || dev >= ndev) return INVALID_DEVICE;
    *pctx = &ctxs[dev];
    return SUCCESS;
}

CUresult cuCtxSetCurrent(CUcontext ctx) {
    NEED_INIT();
    if (ctx && (ctx < &ctxs[0] || ctx >= &ctxs[ndev])) return INVALID_CONTEXT;
    current = ctx;
    return SUCCESS;
}

CUresult cuCtxGetCurrent(CUcontext *pctx) {
    NEED_INIT();
    if (!pctx) return INVALID_VALUE;
    *pctx = current;
    return SUCCESS;
}

CUresult cuMemAlloc_v2(CUdeviceptr *dptr, size_t bytesize) {
    NEED_CTX();
    if (!dptr || bytesize == 0) return INVALID_VALUE;
    int fd = memfd_create("fake-cuda", MFD_CLOEXEC);
    if (fd < 0) return INVALID_VALUE;
    if (ftruncate(fd, (off_t)bytesize) != 0) {
        close(fd);
        return INVALID_VALUE;
    }
    void *p = mmap(NULL, bytesize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        close(fd);
        return INVALID_VALUE;
    }
    pthread_mutex_lock(&mu);
    struct fake_alloc *a = slot();
    if (a) *a = (struct fake_alloc){(uintptr_t)p, bytesize, current->dev, fd, 0, 1};
    pthread_mutex_unlock(&mu);
    if (!a) {
        munmap(p, bytesize);
        close(fd);
        return INVALID_VALUE;
    }
    *dptr = (CUdeviceptr)(uintptr_t)p;
    return SUCCESS;
}

CUresult cuMemFree_v2(CUdeviceptr dptr) {
    NEED_CTX();
    pthread_mutex_lock(&mu);
    struct fake_alloc *a = find_base((uintptr_t)dptr);
    CUresult r = INVALID_VALUE;
    if (a && !a->imported) {
        munmap((void *)a->base, a->size);
        close(a->fd);
        a->live = 0;
        r = SUCCESS;
    }
    pthread_mutex_unlock(&mu);
    return r;
}

CUresult cuMemGetAddressRange_v2(CUdeviceptr *pbase, size_t *psize, CUdeviceptr dptr) {
    NEED_CTX();
    pthread_mutex_lock(&mu);
    struct fake_alloc *a = find((uintptr_t)dptr, 1);
    if (a) {
        if (pbase) *pbase = a->base;
        if (psize) *psize = a->size;
    }
    pthread_mutex_unlock(&mu);
    return a ? SUCCESS : INVALID_VALUE;
}

/* Queue a copy on `s` after checking it: the stream's context is current, `dst_dev`/`src_dev`
 * (-1: host memory, -2: anything) match the pointers. */
static CUresult enqueue(CUstream s, CUdeviceptr dst, int dst_dev, CUdeviceptr src, int src_dev,
                        size_t n) {
    NEED_CTX();
    if (!s || s->ctx != current) return INVALID_HANDLE;
    pthread_mutex_lock(&mu);
    struct fake_alloc *d = find((uintptr_t)dst, n), *sa = find((uintptr_t)src, n);
    int ok = (dst_dev == -1 ? find((uintptr_t)dst, 1) == NULL : d && d->dev == dst_dev) &&
             (src_dev == -1 ? find((uintptr_t)src, 1) == NULL : sa && sa->dev == src_dev);
    if (ok) {
        struct fake_op *op = calloc(1, sizeof *op);
        op->dst = dst;
        op->src = src;
        op->n = n;
        if (s->tail)
            s->tail->next = op;
        else
            s->head = op;
        s->tail = op;
    }
    pthread_mutex_unlock(&mu);
    return ok ? SUCCESS : INVALID_VALUE;
}

CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dstDevice, const void *srcHost, size_t ByteCount,
                              CUstream hStream) {
    NEED_CTX();
    return enqueue(hStream, dstDevice, current->dev, (CUdeviceptr)(uintptr_t)srcHost, -1,
                   ByteCount);
}

CUresult cuMemcpyDtoHAsync_v2(void *dstHost, CUdeviceptr srcDevice, size_t ByteCount,
                              CUstream hStream) {
    NEED_CTX();
    return enqueue(hStream, (CUdeviceptr)(uintptr_t)dstHost, -1, srcDevice, current->dev,
                   ByteCount);
}

CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dstDevice, CUdeviceptr srcDevice, size_t ByteCount,
                              CUstream hStream) {
    NEED_CTX();
    return enqueue(hStream, dstDevice, current->dev, srcDevice, current->dev, ByteCount);
}

CUresult cuMemcpyPeerAsync(CUdeviceptr dstDevice, CUcontext dstContext, CUdeviceptr srcDevice,
                           CUcontext srcContext, size_t ByteCount, CUstream hStream) {
    NEED_CTX();
    if (!dstContext || !srcContext) return INVALID_CONTEXT;
    return enqueue(hStream, dstDevice, dstContext->dev, srcDevice, srcContext->dev, ByteCount);
}

CUresult cuStreamCreate(CUstream *phStream, unsigned int Flags) {
    NEED_CTX();
    if (!phStream || (Flags != 0 && Flags != 1)) return INVALID_VALUE;
    CUstream s = calloc(1, sizeof *s);
    s->ctx = current;
    *phStream = s;
    return SUCCESS;
}

CUresult cuStreamSynchronize(CUstream hStream) {
    NEED_CTX();
    if (!hStream) return INVALID_HANDLE;
    pthread_mutex_lock(&mu);
    struct fake_op *op = hStream->head;
    hStream->head = hStream->tail = NULL;
    pthread_mutex_unlock(&mu);
    while (op) {
        struct fake_op *next = op->next;
        memmove((void *)(uintptr_t)op->dst, (const void *)(uintptr_t)op->src, op->n);
        free(op);
        op = next;
    }
    return SUCCESS;
}

CUresult cuPointerGetAttribute(void *data, int attribute, CUdeviceptr ptr) {
    NEED_CTX();
    if (!data) return INVALID_VALUE;
    pthread_mutex_lock(&mu);
    struct fake_alloc *a = find((uintptr_t)ptr, 1);
    int dev = a ? a->dev : -1;
    int pinned = 0;
    for (int i = 0; !a && i < MAX_REGS; i++)
        if (regs[i].live && ptr >= regs[i].base && ptr - regs[i].base < regs[i].size) pinned = 1;
    pthread_mutex_unlock(&mu);
    if (attribute == 2 /* CU_POINTER_ATTRIBUTE_MEMORY_TYPE */) {
        if (!a && !pinned) return INVALID_VALUE;
        *(unsigned int *)data = a ? 2 /* DEVICE */ : 1 /* HOST */;
        return SUCCESS;
    }
    if (attribute == 9 /* CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL */) {
        if (!a) return INVALID_VALUE;
        *(int *)data = dev;
        return SUCCESS;
    }
    return INVALID_VALUE;
}

CUresult cuMemHostRegister_v2(void *p, size_t bytesize, unsigned int Flags) {
    NEED_CTX();
    if (!p || bytesize == 0 || (Flags & ~0xfu)) return INVALID_VALUE;
    uintptr_t b = (uintptr_t)p;
    CUresult r = SUCCESS;
    pthread_mutex_lock(&mu);
    if (find(b, 1)) r = INVALID_VALUE;
    for (int i = 0; r == SUCCESS && i < MAX_REGS; i++)
        if (regs[i].live && b < regs[i].base + regs[i].size && regs[i].base < b + bytesize)
            r = ALREADY_REGISTERED;
    int i = 0;
    while (r == SUCCESS && i < MAX_REGS && regs[i].live) i++;
    if (r == SUCCESS && i == MAX_REGS) r = INVALID_VALUE;
    if (r == SUCCESS) regs[i] = (struct fake_reg){b, bytesize, 1};
    pthread_mutex_unlock(&mu);
    return r;
}

CUresult cuMemHostUnregister(void *p) {
    NEED_CTX();
    CUresult r = NOT_REGISTERED;
    pthread_mutex_lock(&mu);
    for (int i = 0; i < MAX_REGS; i++)
        if (regs[i].live && regs[i].base == (uintptr_t)p) {
            regs[i].live = 0;
            r = SUCCESS;
        }
    pthread_mutex_unlock(&mu);
    return r;
}

CUresult cuIpcGetMemHandle(CUipcMemHandle *pHandle, CUdeviceptr dptr) {
    NEED_CTX();
    if (!pHandle) return INVALID_VALUE;
    pthread_mutex_lock(&mu);
    struct fake_alloc *a = find_base((uintptr_t)dptr);
    struct fake_ipc h = {{'F', 'A', 'K', 'E', 'C', 'U', 'D', 'A'}, 0, 0, 0};
    if (a && !a->imported) {
        h.pid = getpid();
        h.fd = a->fd;
        h.size = a->size;
    }
    pthread_mutex_unlock(&mu);
    if (!h.size) return INVALID_VALUE;
    memset(pHandle, 0, sizeof *pHandle);
    memcpy(pHandle->reserved, &h, sizeof h);
    /* The last byte is set too: a handle truncated or shifted in passing is refused. */
    pHandle->reserved[63] = 0x5a;
    return SUCCESS;
}

CUresult cuIpcOpenMemHandle_v2(CUdeviceptr *pdptr, CUipcMemHandle handle, unsigned int Flags) {
    NEED_CTX();
    struct fake_ipc h;
    memcpy(&h, handle.reserved, sizeof h);
    if (!pdptr || Flags != 1 || memcmp(h.magic, "FAKECUDA", 8) != 0 ||
        handle.reserved[63] != 0x5a)
        return INVALID_VALUE;
    if (h.pid == getpid()) return INVALID_CONTEXT; /* as CUDA: not in the exporting process */
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd/%d", (int)h.pid, (int)h.fd);
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) return MAP_FAILED_;
    void *p = mmap(NULL, h.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        close(fd);
        return MAP_FAILED_;
    }
    pthread_mutex_lock(&mu);
    struct fake_alloc *a = slot();
    if (a) *a = (struct fake_alloc){(uintptr_t)p, h.size, current->dev, fd, 1, 1};
    pthread_mutex_unlock(&mu);
    if (!a) return INVALID_VALUE;
    *pdptr = (CUdeviceptr)(uintptr_t)p;
    return SUCCESS;
}

CUresult cuIpcCloseMemHandle(CUdeviceptr dptr) {
    NEED_CTX();
    pthread_mutex_lock(&mu);
    struct fake_alloc *a = find_base((uintptr_t)dptr);
    CUresult r = INVALID_VALUE;
    if (a && a->imported) {
        munmap((void *)a->base, a->size);
        close(a->fd);
        a->live = 0;
        r = SUCCESS;
    }
    pthread_mutex_unlock(&mu);
    return r;
}

static const char *name_of(CUresult e) {
    switch (e) {
    case SUCCESS: return "CUDA_SUCCESS";
    case INVALID_VALUE: return "CUDA_ERROR_INVALID_VALUE";
    case NOT_INITIALIZED: return "CUDA_ERROR_NOT_INITIALIZED";
    case NO_DEVICE: return "CUDA_ERROR_NO_DEVICE";
    case INVALID_DEVICE: return "CUDA_ERROR_INVALID_DEVICE";
    case INVALID_CONTEXT: return "CUDA_ERROR_INVALID_CONTEXT";
    case MAP_FAILED_: return "CUDA_ERROR_MAP_FAILED";
    case INVALID_HANDLE: return "CUDA_ERROR_INVALID_HANDLE";
    case ALREADY_REGISTERED: return "CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED";
    case NOT_REGISTERED: return "CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED";
    default: return NULL;
    }
}

CUresult cuGetErrorName(CUresult error, const char **pStr) {
    *pStr = name_of(error);
    return *pStr ? SUCCESS : INVALID_VALUE;
}

CUresult cuGetErrorString(CUresult error, const char **pStr) {
    *pStr = name_of(error) ? "fake driver error" : NULL;
    return *pStr ? SUCCESS : INVALID_VALUE;
}
