/*
 * A fake AscendCL: the subset of libascendcl's API (acl/acl_rt.h) that hal's `ascend` backend
 * calls, with the same C signatures, run on host memory. Tests compile it (cc -shared) and load it
 * in place of libascendcl.so, so the backend runs on machines without an NPU. Built with
 * -DFAKE_ACL_OLD it lacks the optional symbols (pointer attributes, host registration, IPC), as
 * an older CANN does.
 *
 * Stricter than the real runtime where that catches a backend bug: memory calls need a current
 * device on the calling thread (aclrtSetDevice), a copy's stream must belong to it, its device
 * pointers must be memory of that device (or of a peer whose access was enabled), copies run only
 * at aclrtSynchronizeStream, export keys need the PID-validation-off flag and a 65-byte buffer.
 * Device memory is a memfd per allocation; a key names the exporter's pid and fd.
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

typedef int aclError;
typedef void *aclrtStream;

#define ACL_SUCCESS 0
#define ACL_ERROR_REPEAT_INITIALIZE 100002
#define ACL_ERROR_RT_PARAM_INVALID 107000
#define ACL_ERROR_RT_INVALID_DEVICEID 107001
#define ACL_ERROR_RT_CONTEXT_NULL 107002

#define MAX_DEV 8
#define MAX_ALLOCS 4096
#define MAX_REGS 256

struct fake_alloc {
    uintptr_t base;
    size_t size;
    int dev, fd, imported, exported, live;
    char key[65];
};
struct fake_op {
    uintptr_t dst, src;
    size_t n;
    struct fake_op *next;
};
struct fake_stream {
    int dev;
    struct fake_op *head, *tail;
};

static int ndev = -1;
static int set_device_calls;
static int open_keys;
static int peer[MAX_DEV][MAX_DEV];
static __thread int current = -1;
static __thread char last_msg[256];
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct fake_alloc allocs[MAX_ALLOCS];

/* Test hooks. */
int fake_acl_current_device(void) { return current; }
int fake_acl_set_device_calls(void) { return set_device_calls; }
int fake_acl_open_keys(void) { return open_keys; }

static aclError fail(aclError e, const char *msg) {
    snprintf(last_msg, sizeof last_msg, "fake: %s", msg);
    return e;
}

const char *aclGetRecentErrMsg(void) { return last_msg[0] ? last_msg : NULL; }

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

#define NEED_DEV()                                                  \
    if (ndev < 0) return fail(ACL_ERROR_RT_PARAM_INVALID, "aclInit first"); \
    if (current < 0) return fail(ACL_ERROR_RT_CONTEXT_NULL, "no device set on this thread")

aclError aclInit(const char *configPath) {
    if (configPath) return fail(ACL_ERROR_RT_PARAM_INVALID, "no config file expected");
    if (ndev >= 0) return ACL_ERROR_REPEAT_INITIALIZE;
    const char *e = getenv("FAKE_ACL_DEVICES");
    int n = e ? atoi(e) : 2;
    ndev = n < 0 ? 0 : n > MAX_DEV ? MAX_DEV : n;
    return ACL_SUCCESS;
}

aclError aclrtGetDeviceCount(uint32_t *count) {
    if (ndev < 0) return fail(ACL_ERROR_RT_PARAM_INVALID, "aclInit first");
    *count = (uint32_t)ndev;
    return ACL_SUCCESS;
}

aclError aclrtSetDevice(int32_t deviceId) {
    if (ndev < 0) return fail(ACL_ERROR_RT_PARAM_INVALID, "aclInit first");
    if (deviceId < 0 || deviceId >= ndev) return fail(ACL_ERROR_RT_INVALID_DEVICEID, "bad id");
    __atomic_add_fetch(&set_device_calls, 1, __ATOMIC_RELAXED);
    current = deviceId;
    return ACL_SUCCESS;
}

aclError aclrtGetDevice(int32_t *deviceId) {
    if (current < 0) return fail(ACL_ERROR_RT_CONTEXT_NULL, "no device set on this thread");
    *deviceId = current;
    return ACL_SUCCESS;
}

aclError aclrtMalloc(void **devPtr, size_t size, int policy) {
    NEED_DEV();
    if (!devPtr || size == 0 || policy != 0) return fail(ACL_ERROR_RT_PARAM_INVALID, "malloc args");
    int fd = memfd_create("fake-acl", MFD_CLOEXEC);
    if (fd < 0 || ftruncate(fd, (off_t)size) != 0) return fail(ACL_ERROR_RT_PARAM_INVALID, "memfd");
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) return fail(ACL_ERROR_RT_PARAM_INVALID, "mmap");
    pthread_mutex_lock(&mu);
    struct fake_alloc *a = slot();
    if (a) *a = (struct fake_alloc){(uintptr_t)p, size, current, fd, 0, 0, 1, {0}};
    pthread_mutex_unlock(&mu);
    if (!a) return fail(ACL_ERROR_RT_PARAM_INVALID, "too many allocations");
    *devPtr = p;
    return ACL_SUCCESS;
}

aclError aclrtFree(void *devPtr) {
    NEED_DEV();
    pthread_mutex_lock(&mu);
    struct fake_alloc *a = find_base((uintptr_t)devPtr);
    aclError r = fail(ACL_ERROR_RT_PARAM_INVALID, "not an allocation");
    if (a && !a->imported && a->exported) {
        r = fail(ACL_ERROR_RT_PARAM_INVALID, "freed while its export key is open");
    } else if (a && !a->imported) {
        munmap((void *)a->base, a->size);
        close(a->fd);
        a->live = 0;
        r = ACL_SUCCESS;
    }
    pthread_mutex_unlock(&mu);
    return r;
}

aclError aclrtCreateStream(aclrtStream *stream) {
    NEED_DEV();
    struct fake_stream *s = calloc(1, sizeof *s);
    s->dev = current;
    *stream = s;
    return ACL_SUCCESS;
}

aclError aclrtMemcpyAsync(void *dst, size_t destMax, const void *src, size_t count, int kind,
                          aclrtStream stream) {
    NEED_DEV();
    struct fake_stream *s = stream;
    if (!s || s->dev != current) return fail(ACL_ERROR_RT_PARAM_INVALID, "stream of another device");
    if (count > destMax) return fail(ACL_ERROR_RT_PARAM_INVALID, "count > destMax");
    pthread_mutex_lock(&mu);
    struct fake_alloc *d = find((uintptr_t)dst, count), *sa = find((uintptr_t)src, count);
    int dhost = find((uintptr_t)dst, 1) == NULL, shost = find((uintptr_t)src, 1) == NULL;
    int ok;
    switch (kind) {
    case 1: ok = d && d->dev == current && shost; break;
    case 2: ok = sa && sa->dev == current && dhost; break;
    case 3: ok = d && d->dev == current && sa && (sa->dev == current || peer[current][sa->dev]); break;
    default: ok = 0;
    }
    if (ok) {
        struct fake_op *op = calloc(1, sizeof *op);
        *op = (struct fake_op){(uintptr_t)dst, (uintptr_t)src, count, NULL};
        if (s->tail)
            s->tail->next = op;
        else
            s->head = op;
        s->tail = op;
    }
    pthread_mutex_unlock(&mu);
    return ok ? ACL_SUCCESS : fail(ACL_ERROR_RT_PARAM_INVALID, "copy outside an allocation");
}

aclError aclrtSynchronizeStream(aclrtStream stream) {
    NEED_DEV();
    struct fake_stream *s = stream;
    if (!s || s->dev != current) return fail(ACL_ERROR_RT_PARAM_INVALID, "stream of another device");
    pthread_mutex_lock(&mu);
    struct fake_op *op = s->head;
    s->head = s->tail = NULL;
    pthread_mutex_unlock(&mu);
    while (op) {
        struct fake_op *next = op->next;
        memmove((void *)op->dst, (const void *)op->src, op->n);
        free(op);
        op = next;
    }
    return ACL_SUCCESS;
}

aclError aclrtDeviceEnablePeerAccess(int32_t peerDeviceId, uint32_t flags) {
    NEED_DEV();
    if (flags != 0 || peerDeviceId < 0 || peerDeviceId >= ndev || peerDeviceId == current)
        return fail(ACL_ERROR_RT_PARAM_INVALID, "peer access args");
    peer[current][peerDeviceId] = 1;
    return ACL_SUCCESS;
}

/* Test hook: 4096 bytes of device 1 allocated behind the backend's back (as torch_npu does). */
aclError aclrtMalloc(void **devPtr, size_t size, int policy);
unsigned long long fake_acl_foreign_alloc(void) {
    int prev = current;
    void *p = NULL;
    current = 1;
    aclError r = aclrtMalloc(&p, 4096, 0);
    current = prev;
    return r == ACL_SUCCESS ? (unsigned long long)(uintptr_t)p : 0;
}

#ifndef FAKE_ACL_OLD
static struct {
    uintptr_t base;
    size_t size;
    int live;
} regs[MAX_REGS];

typedef struct {
    uint32_t id;
    int type;
} aclrtMemLocation;
typedef struct {
    aclrtMemLocation location;
    uint32_t pageSize;
    uint32_t rsv[4];
} aclrtPtrAttributes;

aclError aclrtPointerGetAttributes(const void *ptr, aclrtPtrAttributes *attributes) {
    NEED_DEV();
    memset(attributes, 0, sizeof *attributes);
    pthread_mutex_lock(&mu);
    struct fake_alloc *a = find((uintptr_t)ptr, 1);
    attributes->location.type = a ? 1 /* DEVICE */ : 2 /* UNREGISTERED */;
    attributes->location.id = a ? (uint32_t)a->dev : 0;
    attributes->pageSize = 4096;
    pthread_mutex_unlock(&mu);
    return ACL_SUCCESS;
}

aclError aclrtHostRegister(void *ptr, uint64_t size, int type, void **devPtr) {
    NEED_DEV();
    if (!ptr || size == 0 || type != 0 || !devPtr) return fail(ACL_ERROR_RT_PARAM_INVALID, "register args");
    pthread_mutex_lock(&mu);
    int i = 0, clash = 0;
    for (int j = 0; j < MAX_REGS; j++)
        if (regs[j].live && (uintptr_t)ptr < regs[j].base + regs[j].size &&
            regs[j].base < (uintptr_t)ptr + size)
            clash = 1;
    while (i < MAX_REGS && regs[i].live) i++;
    if (!clash && i < MAX_REGS) {
        regs[i].base = (uintptr_t)ptr;
        regs[i].size = size;
        regs[i].live = 1;
    }
    pthread_mutex_unlock(&mu);
    if (clash || i == MAX_REGS) return fail(ACL_ERROR_RT_PARAM_INVALID, "already registered");
    *devPtr = ptr;
    return ACL_SUCCESS;
}

aclError aclrtHostUnregister(void *ptr) {
    NEED_DEV();
    aclError r = fail(ACL_ERROR_RT_PARAM_INVALID, "not registered");
    pthread_mutex_lock(&mu);
    for (int i = 0; i < MAX_REGS; i++)
        if (regs[i].live && regs[i].base == (uintptr_t)ptr) {
            regs[i].live = 0;
            r = ACL_SUCCESS;
        }
    pthread_mutex_unlock(&mu);
    return r;
}

aclError aclrtIpcMemGetExportKey(void *devPtr, size_t size, char *key, size_t len, uint64_t flags) {
    NEED_DEV();
    if (len != 65 || flags != 1 || !key) return fail(ACL_ERROR_RT_PARAM_INVALID, "export args");
    pthread_mutex_lock(&mu);
    struct fake_alloc *a = find_base((uintptr_t)devPtr);
    int ok = a && !a->imported && !a->exported && size <= a->size;
    if (ok) {
        snprintf(a->key, sizeof a->key, "fakeacl-%d-%d-%zu", (int)getpid(), a->fd, a->size);
        memcpy(key, a->key, sizeof a->key);
        a->exported = 1;
        open_keys++;
    }
    pthread_mutex_unlock(&mu);
    return ok ? ACL_SUCCESS : fail(ACL_ERROR_RT_PARAM_INVALID, "cannot export");
}

aclError aclrtIpcMemImportByKey(void **devPtr, const char *key, uint64_t flags) {
    NEED_DEV();
    int pid, fd;
    size_t size;
    if (flags != 1 || sscanf(key, "fakeacl-%d-%d-%zu", &pid, &fd, &size) != 3)
        return fail(ACL_ERROR_RT_PARAM_INVALID, "import args");
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd/%d", pid, fd);
    int f = open(path, O_RDWR | O_CLOEXEC);
    if (f < 0) return fail(ACL_ERROR_RT_PARAM_INVALID, "no such key");
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, f, 0);
    if (p == MAP_FAILED) return fail(ACL_ERROR_RT_PARAM_INVALID, "mmap");
    pthread_mutex_lock(&mu);
    struct fake_alloc *a = slot();
    if (a) {
        *a = (struct fake_alloc){(uintptr_t)p, size, current, f, 1, 0, 1, {0}};
        snprintf(a->key, sizeof a->key, "%s", key);
    }
    pthread_mutex_unlock(&mu);
    if (!a) return fail(ACL_ERROR_RT_PARAM_INVALID, "too many allocations");
    *devPtr = p;
    return ACL_SUCCESS;
}

aclError aclrtIpcMemClose(const char *key) {
    NEED_DEV();
    aclError r = fail(ACL_ERROR_RT_PARAM_INVALID, "unknown key");
    pthread_mutex_lock(&mu);
    for (int i = 0; i < MAX_ALLOCS; i++) {
        struct fake_alloc *a = &allocs[i];
        if (!a->live || strcmp(a->key, key) != 0) continue;
        if (a->imported) {
            munmap((void *)a->base, a->size);
            close(a->fd);
            a->live = 0;
        } else {
            a->exported = 0;
            a->key[0] = 0;
            open_keys--;
        }
        r = ACL_SUCCESS;
        break;
    }
    pthread_mutex_unlock(&mu);
    return r;
}
#endif
