#include "stream.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#include "../util/util.h"

#define ALIGN 4096u

enum { SLOT_EMPTY, SLOT_LOADING, SLOT_READY, SLOT_IN_USE };

typedef struct slot {
    uint8_t *buf;
    int unit;
    int state;
} slot;

struct clv_streamer {
    const clv_st_set *set;
    clv_stream_unit *units;
    int n_units;
    bool prefetch;
    int *fd;         /* per file: O_DIRECT where possible */
    bool *direct;
    slot slots[2];
    uint64_t slot_bytes;
    pthread_t th;
    bool thread_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int want[2];     /* unit the reader should load into slot k, -1 none */
    bool stop;
    int error;
    char errmsg[512];
    uint64_t bytes_read;
    double wait_s;
};

/* Read tensor bytes [begin, end) of file f into dst, which has room for the
 * aligned span; returns the offset of `begin` inside dst, or -1. */
static int read_span(clv_streamer *s, int f, uint64_t begin, uint64_t end, uint8_t *dst, char *err, size_t errcap) {
    uint64_t a0 = begin & ~(uint64_t)(ALIGN - 1), a1 = (end + ALIGN - 1) & ~(uint64_t)(ALIGN - 1);
    uint64_t done = 0, want = a1 - a0;
    while (done < want) {
        ssize_t r = pread(s->fd[f], dst + done, want - done, (off_t)(a0 + done));
        if (r < 0 && errno == EINTR) continue;
        if (r < 0 && errno == EINVAL && s->direct[f]) {
            /* this file system refuses O_DIRECT: reopen buffered */
            int fd = open(s->set->files[f].path, O_RDONLY | O_CLOEXEC);
            if (fd < 0) break;
            close(s->fd[f]);
            s->fd[f] = fd;
            s->direct[f] = false;
            continue;
        }
        if (r <= 0) {
            /* the aligned span may run past the end of the file: fine once `end` is covered */
            if (r == 0 && a0 + done >= end) break;
            snprintf(err, errcap, "%s: read of bytes %llu..%llu failed: %s", s->set->files[f].path,
                     (unsigned long long)begin, (unsigned long long)end, r < 0 ? strerror(errno) : "unexpected end of file");
            return -1;
        }
        done += (uint64_t)r;
    }
    if (!s->direct[f]) posix_fadvise(s->fd[f], (off_t)a0, (off_t)want, POSIX_FADV_DONTNEED);
    return (int)(begin - a0);
}

static int load_unit(clv_streamer *s, int u, uint8_t *buf) {
    clv_stream_unit *un = &s->units[u];
    for (int i = 0; i < un->n; i++) {
        const clv_st_tensor *t = un->t[i];
        int off = read_span(s, t->file, t->begin, t->end, buf + (un->slot_off[i] & ~(uint64_t)(ALIGN - 1)), s->errmsg,
                            sizeof s->errmsg);
        if (off < 0) return -1;
        s->bytes_read += t->end - t->begin;
    }
    return 0;
}

static void *reader_main(void *arg) {
    clv_streamer *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        int k = -1;
        while (!s->stop && (k = s->want[0] >= 0 ? 0 : s->want[1] >= 0 ? 1 : -1) < 0) pthread_cond_wait(&s->cv, &s->mu);
        if (s->stop) break;
        int u = s->want[k];
        s->want[k] = -1;
        s->slots[k].unit = u;
        s->slots[k].state = SLOT_LOADING;
        pthread_mutex_unlock(&s->mu);
        int rc = load_unit(s, u, s->slots[k].buf);
        pthread_mutex_lock(&s->mu);
        if (rc) s->error = 1;
        s->slots[k].state = SLOT_READY;
        pthread_cond_broadcast(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

int clv_streamer_new(clv_streamer **out, const clv_st_set *set, clv_stream_unit *units, int n_units, bool prefetch,
                     clv_status *st) {
    *out = NULL;
    clv_streamer *s = calloc(1, sizeof *s);
    if (!s) return clv_fail(st, CLV_ENOMEM, "out of memory");
    s->set = set;
    s->units = units;
    s->n_units = n_units;
    s->prefetch = prefetch;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->want[0] = s->want[1] = -1;
    /* lay each unit out in a slot: every tensor at an aligned offset, with
     * room for the alignment slack on both sides */
    for (int u = 0; u < n_units; u++) {
        uint64_t cur = 0;
        for (int i = 0; i < units[u].n; i++) {
            const clv_st_tensor *t = units[u].t[i];
            uint64_t a0 = t->begin & ~(uint64_t)(ALIGN - 1), a1 = (t->end + ALIGN - 1) & ~(uint64_t)(ALIGN - 1);
            units[u].slot_off[i] = cur + (t->begin - a0);
            cur += a1 - a0;
        }
        units[u].bytes = cur;
        if (cur > s->slot_bytes) s->slot_bytes = cur;
    }
    s->fd = calloc((size_t)set->n_files, sizeof(int));
    s->direct = calloc((size_t)set->n_files, sizeof(bool));
    if (!s->fd || !s->direct) goto oom;
    for (int f = 0; f < set->n_files; f++) s->fd[f] = -1;
    for (int f = 0; f < set->n_files; f++) {
        s->fd[f] = open(set->files[f].path, O_RDONLY | O_CLOEXEC | O_DIRECT);
        s->direct[f] = s->fd[f] >= 0;
        if (s->fd[f] < 0) s->fd[f] = open(set->files[f].path, O_RDONLY | O_CLOEXEC);
        if (s->fd[f] < 0) {
            int e = errno;
            clv_streamer_free(s);
            return clv_fail(st, CLV_EIO, "%s: cannot open for disk-tier streaming: %s", set->files[f].path, strerror(e));
        }
    }
    for (int k = 0; k < 2; k++) {
        s->slots[k].unit = -1;
        if (!(s->slots[k].buf = aligned_alloc(ALIGN, s->slot_bytes ? s->slot_bytes : ALIGN))) goto oom;
    }
    if (prefetch) {
        if (pthread_create(&s->th, NULL, reader_main, s) != 0) {
            clv_streamer_free(s);
            return clv_fail(st, CLV_EIO, "cannot start the disk reader thread");
        }
        s->thread_started = true;
        pthread_mutex_lock(&s->mu);
        s->want[0] = 0;
        if (n_units > 1) s->want[1] = 1;
        pthread_cond_signal(&s->cv);
        pthread_mutex_unlock(&s->mu);
    }
    *out = s;
    return 0;
oom:
    clv_streamer_free(s);
    return clv_fail(st, CLV_ENOMEM, "out of memory for the disk staging buffers");
}

void clv_streamer_free(clv_streamer *s) {
    if (!s) return;
    if (s->thread_started) {
        pthread_mutex_lock(&s->mu);
        s->stop = true;
        pthread_cond_broadcast(&s->cv);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->th, NULL);
    }
    for (int f = 0; s->fd && f < s->set->n_files; f++)
        if (s->fd[f] >= 0) close(s->fd[f]);
    free(s->fd);
    free(s->direct);
    for (int k = 0; k < 2; k++) free(s->slots[k].buf);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
}

const uint8_t *clv_streamer_acquire(clv_streamer *s, int u, clv_status *st) {
    double t0 = clv_now();
    const uint8_t *base = NULL;
    if (!s->prefetch) {
        /* synchronous: read into slot 0 now, unless it already holds u */
        if (s->slots[0].unit != u || s->n_units > 1) {
            if (load_unit(s, u, s->slots[0].buf)) {
                clv_fail(st, CLV_EIO, "%s", s->errmsg);
                return NULL;
            }
            s->slots[0].unit = u;
        }
        s->wait_s += clv_now() - t0;
        return s->slots[0].buf;
    }
    pthread_mutex_lock(&s->mu);
    for (;;) {
        for (int k = 0; k < 2 && !base; k++)
            if (s->slots[k].unit == u && s->slots[k].state == SLOT_READY) {
                s->slots[k].state = SLOT_IN_USE;
                base = s->slots[k].buf;
            }
        if (base || s->error) break;
        /* not requested at all (e.g. first use after a reset): ask for it */
        bool pending = s->want[0] == u || s->want[1] == u;
        for (int k = 0; k < 2; k++) pending |= s->slots[k].unit == u && s->slots[k].state == SLOT_LOADING;
        if (!pending) {
            for (int k = 0; k < 2; k++)
                if (s->slots[k].state != SLOT_LOADING && s->slots[k].state != SLOT_IN_USE && s->want[k] < 0) {
                    s->want[k] = u;
                    s->slots[k].state = SLOT_EMPTY;
                    s->slots[k].unit = -1;
                    pthread_cond_broadcast(&s->cv);
                    break;
                }
        }
        pthread_cond_wait(&s->cv, &s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    s->wait_s += clv_now() - t0;
    if (!base) clv_fail(st, CLV_EIO, "%s", s->errmsg);
    return base;
}

void clv_streamer_release(clv_streamer *s, int u) {
    if (!s->prefetch) return;
    pthread_mutex_lock(&s->mu);
    for (int k = 0; k < 2; k++)
        if (s->slots[k].unit == u && s->slots[k].state == SLOT_IN_USE) {
            s->slots[k].state = SLOT_READY;
            /* with one or two units every unit stays resident in its slot */
            if (s->n_units > 2) {
                s->slots[k].state = SLOT_EMPTY;
                s->slots[k].unit = -1;
                s->want[k] = (u + 2) % s->n_units;
                pthread_cond_broadcast(&s->cv);
            }
        }
    pthread_mutex_unlock(&s->mu);
}

uint64_t clv_streamer_bytes_read(const clv_streamer *s) { return s->bytes_read; }
double clv_streamer_wait_seconds(const clv_streamer *s) { return s->wait_s; }
