/* Helpers of the extension module _native (sources _payload.c and _scan.c). */
#ifndef TALLY_NATIVE_H
#define TALLY_NATIVE_H
#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* Python's floor division for the (positive, in practice) epoch values. */
static inline long long floordiv(long long a, long long b) {
    long long q = a / b;
    return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

/* counts[key] += n (a new key starts at 0). */
static inline int add_count(PyObject *counts, PyObject *key, long long n) {
    PyObject *old = PyDict_GetItemWithError(counts, key);
    long long base = 0;
    if (old != NULL) {
        base = PyLong_AsLongLong(old);
        if (base == -1 && PyErr_Occurred()) return -1;
    } else if (PyErr_Occurred()) {
        return -1;
    }
    PyObject *value = PyLong_FromLongLong(base + n);
    if (value == NULL) return -1;
    int rc = PyDict_SetItem(counts, key, value);
    Py_DECREF(value);
    return rc;
}

/* A cached int for an epoch unit: consecutive events nearly always share their minute and hour. */
typedef struct {
    long long value;
    PyObject *obj;
} unit_cache;

static inline PyObject *unit(unit_cache *c, long long value) {
    if (c->obj == NULL || c->value != value) {
        PyObject *obj = PyLong_FromLongLong(value);
        if (obj == NULL) return NULL;
        Py_XSETREF(c->obj, obj);
        c->value = value;
    }
    return c->obj; /* borrowed from the cache */
}

/* segments[(rule, anon)] gets the hit int(ts * 1000) appended (a new key starts a list). */
static inline int add_hit(PyObject *segments, PyObject *rule, PyObject *anon, double ts) {
    PyObject *key = PyTuple_Pack(2, rule, anon);
    PyObject *ms = key ? PyLong_FromLongLong((long long)(ts * 1000.0)) : NULL;
    int added = -1;
    if (ms != NULL) {
        PyObject *times = PyDict_GetItemWithError(segments, key);
        if (times != NULL) {
            added = PyList_Append(times, ms);
        } else if (!PyErr_Occurred()) {
            PyObject *fresh = PyList_New(1);
            if (fresh != NULL) {
                Py_INCREF(ms);
                PyList_SET_ITEM(fresh, 0, ms);
                added = PyDict_SetItem(segments, key, fresh);
                Py_DECREF(fresh);
            }
        }
    }
    Py_XDECREF(ms);
    Py_XDECREF(key);
    return added;
}

/* _scan.c: the record scanner (see there); registered by PyInit__native. */
PyObject *scan(PyObject *self, PyObject *args);
int scan_init(PyObject *module);

#endif
