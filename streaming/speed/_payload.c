/* The speed layer's C extension module ``_native``: this source encodes the apply payload's per-visitor
 * sections (and defines the module); the record scanner and its fold are in _scan.c (one module, two
 * sources; _native.h holds what they share).
 *
 * ``streaming/speed/aggregate.py`` holds the reference of each (``TenantBatch._sections_python``) and calls
 * these instead when the module is built; ``tests/speed/test_aggregate.py`` checks both give the same
 * payload bytes. The gain is the interpreter's per-event work, not a different algorithm.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#include "_native.h"

/* ---- msgpack, encoded as msgspec encodes it (smallest int and header forms), for the payload's two
 * per-visitor sections: built here as bytes, embedded by the store as msgspec.Raw. ---- */
typedef struct {
    char *buf;
    size_t len, cap;
} out_t;

static int put(out_t *o, const void *data, size_t n) {
    if (o->len + n > o->cap) {
        size_t cap = o->cap ? o->cap : 256;
        while (cap < o->len + n) cap *= 2;
        char *buf = PyMem_Realloc(o->buf, cap);
        if (buf == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        o->buf = buf;
        o->cap = cap;
    }
    memcpy(o->buf + o->len, data, n);
    o->len += n;
    return 0;
}

static int put_be(out_t *o, unsigned char tag, unsigned long long x, int width) {
    unsigned char b[9];
    b[0] = tag;
    for (int i = 0; i < width; i++) b[1 + i] = (unsigned char)(x >> (8 * (width - 1 - i)));
    return put(o, b, 1 + width);
}

static int put_int(out_t *o, long long x) {
    if (x >= 0) {
        unsigned long long u = (unsigned long long)x;
        if (u < 128) {
            unsigned char b = (unsigned char)u;
            return put(o, &b, 1);
        }
        if (u < 256) return put_be(o, 0xcc, u, 1);
        if (u < 65536) return put_be(o, 0xcd, u, 2);
        if (u < 4294967296ULL) return put_be(o, 0xce, u, 4);
        return put_be(o, 0xcf, u, 8);
    }
    if (x >= -32) {
        unsigned char b = (unsigned char)(0xe0 | (x + 32));
        return put(o, &b, 1);
    }
    if (x >= -128) return put_be(o, 0xd0, (unsigned long long)x, 1);
    if (x >= -32768) return put_be(o, 0xd1, (unsigned long long)x, 2);
    if (x >= -2147483648LL) return put_be(o, 0xd2, (unsigned long long)x, 4);
    return put_be(o, 0xd3, (unsigned long long)x, 8);
}

static int put_array_header(out_t *o, size_t n) {
    if (n < 16) {
        unsigned char b = (unsigned char)(0x90 | n);
        return put(o, &b, 1);
    }
    if (n < 65536) return put_be(o, 0xdc, n, 2);
    return put_be(o, 0xdd, n, 4);
}

static int put_str_header(out_t *o, size_t n) {
    if (n < 32) {
        unsigned char b = (unsigned char)(0xa0 | n);
        return put(o, &b, 1);
    }
    if (n < 256) return put_be(o, 0xd9, n, 1);
    if (n < 65536) return put_be(o, 0xda, n, 2);
    return put_be(o, 0xdb, n, 4);
}

static int put_str(out_t *o, PyObject *text) {
    Py_ssize_t n;
    const char *utf8 = PyUnicode_AsUTF8AndSize(text, &n);
    if (utf8 == NULL || put_str_header(o, (size_t)n) < 0) return -1;
    return put(o, utf8, (size_t)n);
}

static int as_ll(PyObject *obj, long long *x) {
    *x = PyLong_AsLongLong(obj);
    return (*x == -1 && PyErr_Occurred()) ? -1 : 0;
}

/* A group of entries sharing a key (hour; or rule and bucket), with its columns encoded as they come. */
typedef struct {
    long long a, b;
    size_t n, nstates;
    out_t cols[4];
} group_t;

typedef struct {
    group_t *items;
    size_t n, cap;
} groups_t;

static group_t *group_for(groups_t *g, long long a, long long b) {
    for (size_t i = 0; i < g->n; i++) {
        if (g->items[i].a == a && g->items[i].b == b) return &g->items[i];
    }
    if (g->n == g->cap) {
        size_t cap = g->cap ? g->cap * 2 : 8;
        group_t *items = PyMem_Realloc(g->items, cap * sizeof(group_t));
        if (items == NULL) {
            PyErr_NoMemory();
            return NULL;
        }
        g->items = items;
        g->cap = cap;
    }
    group_t *grp = &g->items[g->n++];
    memset(grp, 0, sizeof(*grp));
    grp->a = a;
    grp->b = b;
    return grp;
}

static void groups_free(groups_t *g) {
    for (size_t i = 0; i < g->n; i++) {
        for (int c = 0; c < 4; c++) PyMem_Free(g->items[i].cols[c].buf);
    }
    PyMem_Free(g->items);
}

static PyObject *out_bytes(out_t *o) {
    PyObject *bytes = PyBytes_FromStringAndSize(o->buf ? o->buf : "", (Py_ssize_t)o->len);
    PyMem_Free(o->buf);
    return bytes;
}

/* visitor_groups(visitors: set of (hour, anonymous_id)) -> msgpack [[hour, [anonymous_id, ...]], ...],
 * hours in order of first appearance while iterating the set (as TenantBatch.payload's reference). */
static PyObject *visitor_groups(PyObject *self, PyObject *visitors) {
    groups_t g = {NULL, 0, 0};
    out_t o = {NULL, 0, 0};
    PyObject *it = PyObject_GetIter(visitors), *item;
    if (it == NULL) return NULL;
    while ((item = PyIter_Next(it)) != NULL) {
        long long hour;
        group_t *grp = NULL;
        int ok = PyTuple_Check(item) && PyTuple_GET_SIZE(item) == 2 && as_ll(PyTuple_GET_ITEM(item, 0), &hour) == 0 &&
                 (grp = group_for(&g, hour, 0)) != NULL && put_str(&grp->cols[0], PyTuple_GET_ITEM(item, 1)) == 0;
        Py_DECREF(item);
        if (!ok) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "visitor_groups: expected (hour, anonymous_id)");
            goto error;
        }
        grp->n++;
    }
    if (PyErr_Occurred() || put_array_header(&o, g.n) < 0) goto error;
    for (size_t i = 0; i < g.n; i++) {
        group_t *grp = &g.items[i];
        if (put_array_header(&o, 2) < 0 || put_int(&o, grp->a) < 0 || put_array_header(&o, grp->n) < 0 ||
            put(&o, grp->cols[0].buf, grp->cols[0].len) < 0) {
            goto error;
        }
    }
    Py_DECREF(it);
    groups_free(&g);
    return out_bytes(&o);
error:
    Py_DECREF(it);
    groups_free(&g);
    PyMem_Free(o.buf);
    return NULL;
}

/* segment_groups(segments: {(rule, anonymous_id): [epoch ms, ...]}, shapes: [(min_count, window_ms)])
 * -> msgpack [[rule + 1, bucket, anonymous_ids, states, oldest, counts], ...]: TenantBatch.payload's
 * reference, in C. Each visitor's hits are sorted (in place, as the reference does) and cut to the newest
 * min_count inside the window; the group is (rule, newest // window); a state (only for min_count > 1)
 * is the kept hits msgpack-encoded, inside a msgpack string. */
static PyObject *segment_groups(PyObject *self, PyObject *args) {
    PyObject *segments, *shapes;
    if (!PyArg_ParseTuple(args, "O!O!", &PyDict_Type, &segments, &PyList_Type, &shapes)) return NULL;
    groups_t g = {NULL, 0, 0};
    out_t o = {NULL, 0, 0}, state = {NULL, 0, 0};
    Py_ssize_t pos = 0;
    PyObject *key, *times;
    while (PyDict_Next(segments, &pos, &key, &times)) {
        long long rule, k, window;
        if (!PyTuple_Check(key) || PyTuple_GET_SIZE(key) != 2 || !PyList_Check(times) || PyList_GET_SIZE(times) == 0) {
            PyErr_SetString(PyExc_TypeError, "segment_groups: expected (rule, anonymous_id) -> non-empty list");
            goto error;
        }
        if (as_ll(PyTuple_GET_ITEM(key, 0), &rule) < 0) goto error;
        if (rule < 0 || rule >= PyList_GET_SIZE(shapes)) {
            PyErr_SetString(PyExc_IndexError, "segment_groups: rule index out of range");
            goto error;
        }
        PyObject *shape = PyList_GET_ITEM(shapes, rule);
        if (!PyTuple_Check(shape) || PyTuple_GET_SIZE(shape) != 2 || as_ll(PyTuple_GET_ITEM(shape, 0), &k) < 0 ||
            as_ll(PyTuple_GET_ITEM(shape, 1), &window) < 0 || k < 1 || window < 1) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "segment_groups: shapes hold (min_count >= 1, window_ms >= 1)");
            goto error;
        }
        Py_ssize_t n = PyList_GET_SIZE(times);
        if (n > 1 && PyList_Sort(times) < 0) goto error;
        long long newest, t;
        if (as_ll(PyList_GET_ITEM(times, n - 1), &newest) < 0) goto error;
        Py_ssize_t from = n > 1 && n > k ? n - (Py_ssize_t)k : 0;
        if (n > 1) { /* drop the kept ones a window or more older than the newest */
            while (from < n - 1) {
                if (as_ll(PyList_GET_ITEM(times, from), &t) < 0) goto error;
                if (t > newest - window) break;
                from++;
            }
        }
        long long first;
        if (as_ll(PyList_GET_ITEM(times, from), &first) < 0) goto error;
        group_t *grp = group_for(&g, rule, floordiv(newest, window));
        if (grp == NULL || put_str(&grp->cols[0], PyTuple_GET_ITEM(key, 1)) < 0) goto error;
        grp->n++;
        if (k > 1) {
            state.len = 0;
            if (put_array_header(&state, (size_t)(n - from)) < 0) goto error;
            for (Py_ssize_t i = from; i < n; i++) {
                if (as_ll(PyList_GET_ITEM(times, i), &t) < 0 || put_int(&state, t) < 0) goto error;
            }
            if (put_str_header(&grp->cols[1], state.len) < 0 || put(&grp->cols[1], state.buf, state.len) < 0) goto error;
            grp->nstates++;
        }
        if (put_int(&grp->cols[2], first) < 0 || put_int(&grp->cols[3], (long long)(n - from)) < 0) goto error;
    }
    if (put_array_header(&o, g.n) < 0) goto error;
    for (size_t i = 0; i < g.n; i++) {
        group_t *grp = &g.items[i];
        if (put_array_header(&o, 6) < 0 || put_int(&o, grp->a + 1) < 0 || put_int(&o, grp->b) < 0) goto error;
        size_t counts[4] = {grp->n, grp->nstates, grp->n, grp->n};
        for (int c = 0; c < 4; c++) {
            if (put_array_header(&o, counts[c]) < 0 || put(&o, grp->cols[c].buf, grp->cols[c].len) < 0) goto error;
        }
    }
    groups_free(&g);
    PyMem_Free(state.buf);
    return out_bytes(&o);
error:
    groups_free(&g);
    PyMem_Free(state.buf);
    PyMem_Free(o.buf);
    return NULL;
}

static PyMethodDef methods[] = {
    {"visitor_groups", visitor_groups, METH_O, "The payload's visitors per hour, msgpack-encoded."},
    {"segment_groups", segment_groups, METH_VARARGS, "The payload's segment entries per (rule, bucket), msgpack-encoded."},
    {"scan", scan, METH_VARARGS, "Scan records into columns, declining what only the contract can judge (see _scan.c)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_native", NULL, -1, methods};

PyMODINIT_FUNC PyInit__native(void) {
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && scan_init(m) < 0) Py_CLEAR(m);
    return m;
}
