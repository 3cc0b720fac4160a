/* The speed layer's record scanner: event JSON -> the columns the fold needs, without msgspec objects.
 *
 * msgspec's typed decode builds ~12 Python objects per event (the struct, a UUID, two datetimes with
 * their offsets, five strings, the properties dict and its values) that the fold reads five of and
 * then frees: ~2.7 us of a ~7 us aggregate per event on this machine. The scanner reads a record's bytes
 * once and keeps only what the fold and the apply use (tenant, event type, visitor, received_at, the
 * id's 16 bytes and the properties the rules name), creating only the strings that end up in the
 * aggregates.
 *
 * It is a strict subset of the contract, never a second judge of it: a record it is not certain about
 * (any escape or non-ASCII byte in a string, a duplicate field, an exponent, a timestamp or UUID form
 * other than the plainest, a non-string value of a wanted property, ...) is *declined*, and the caller
 * decodes it with the contract's own decoder, which accepts or rejects it with its reason. So a record
 * is accepted here only if the contract accepts it, with the same values; tests/speed/test_scan.py
 * checks that against the contract on generated and mutated records.
 *
 * scan(records, max_bytes, limit_us, etypes, wanted, skip_tenants) -> (Scan, declined indices)
 * Scan.put(i, tenant, etype_index, anonymous_id, received_us, id16, wanted_values)  a declined record the
 *     contract accepted, filled in by the caller (so every later step sees one column form)
 * Scan.entry(i), Scan.order(), Scan.ids(), Scan.by_tenant(keep), Scan.fold(views, keep, page_view, rules, skip)
 */
#include "_native.h"

#include <stddef.h>
#include <string.h>

/* Property keys the rules may name (a bit each in a 64-bit mask); more and aggregate.py does not scan. */
#define MAX_WANTED 64

typedef struct {
    const unsigned char *p; /* start of the string's bytes (inside the record) */
    Py_ssize_t n;
} span;

typedef struct {
    PyObject *tenant; /* owned; one object per distinct tenant id of the call */
    PyObject *anon;   /* owned */
    PyObject *id_obj; /* owned, made by ids() */
    long long us;     /* received_at, epoch microseconds */
    unsigned char id[16];
    unsigned char filled, etype;
} entry_t;

typedef struct {
    PyObject_HEAD
    Py_ssize_t n, nw;
    entry_t *entries;
    PyObject **wanted; /* n * nw values, owned; NULL = absent or null (None) */
    PyObject *records; /* the list scanned */
    PyObject *etypes;  /* tuple of event type strings */
    Py_ssize_t *order; /* indices of filled entries, in order (made by order/ids) */
    Py_ssize_t norder;
} ScanObject;

static PyTypeObject ScanType;

/* ---- JSON, the strict subset ---- */

enum { OK = 0, DECLINE = 1 };

static inline const unsigned char *ws(const unsigned char *p, const unsigned char *end) {
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    return p;
}

/* A string without escapes, control characters or non-ASCII bytes; *pp at its opening quote. Eight
 * bytes at a time while none of them is a quote, a backslash, a control character or non-ASCII. */
#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL
static inline int str_plain(const unsigned char **pp, const unsigned char *end, span *out) {
    const unsigned char *p = *pp;
    if (p >= end || *p != '"') return DECLINE;
    const unsigned char *s = ++p;
    while (end - p >= 8) {
        unsigned long long x;
        memcpy(&x, p, 8);
        unsigned long long q = x ^ (ONES * '"'), b = x ^ (ONES * '\\');
        unsigned long long special = ((q - ONES) & ~q) | ((b - ONES) & ~b) | ((x - ONES * 0x20) & ~x) | x;
        if (special & HIGHS) break;
        p += 8;
    }
    while (p < end) {
        unsigned char c = *p;
        if (c == '"') {
            out->p = s;
            out->n = p - s;
            *pp = p + 1;
            return OK;
        }
        if (c == '\\' || c < 0x20 || c >= 0x80) return DECLINE;
        p++;
    }
    return DECLINE;
}

/* -?(0|[1-9][0-9]*)(\.[0-9]+)? of at most 18 digits: no exponent, nothing msgspec might widen or round. */
static int number_plain(const unsigned char **pp, const unsigned char *end) {
    const unsigned char *p = *pp;
    int digits = 0;
    if (p < end && *p == '-') p++;
    if (p >= end) return DECLINE;
    if (*p == '0') {
        p++;
        digits++;
    } else if (*p >= '1' && *p <= '9') {
        while (p < end && *p >= '0' && *p <= '9') p++, digits++;
    } else {
        return DECLINE;
    }
    if (p < end && *p == '.') {
        p++;
        if (p >= end || *p < '0' || *p > '9') return DECLINE;
        while (p < end && *p >= '0' && *p <= '9') p++, digits++;
    }
    if (digits > 18 || (p < end && (*p == 'e' || *p == 'E'))) return DECLINE;
    *pp = p;
    return OK;
}

static int skip_value(const unsigned char **pp, const unsigned char *end, int depth);

static int skip_members(const unsigned char **pp, const unsigned char *end, int depth, int object) {
    const unsigned char *p = ws(*pp + 1, end);
    unsigned char close = object ? '}' : ']';
    if (p < end && *p == close) {
        *pp = p + 1;
        return OK;
    }
    for (;;) {
        if (object) {
            span key;
            if (str_plain(&p, end, &key) != OK) return DECLINE;
            p = ws(p, end);
            if (p >= end || *p != ':') return DECLINE;
            p = ws(p + 1, end);
        }
        if (skip_value(&p, end, depth + 1) != OK) return DECLINE;
        p = ws(p, end);
        if (p >= end) return DECLINE;
        if (*p == close) {
            *pp = p + 1;
            return OK;
        }
        if (*p != ',') return DECLINE;
        p = ws(p + 1, end);
    }
}

static int skip_value(const unsigned char **pp, const unsigned char *end, int depth) {
    const unsigned char *p = *pp;
    if (p >= end || depth > 32) return DECLINE;
    span s;
    switch (*p) {
    case '"':
        return str_plain(pp, end, &s);
    case '{':
        return skip_members(pp, end, depth, 1);
    case '[':
        return skip_members(pp, end, depth, 0);
    case 't':
        if (end - p >= 4 && memcmp(p, "true", 4) == 0) return *pp = p + 4, OK;
        return DECLINE;
    case 'f':
        if (end - p >= 5 && memcmp(p, "false", 5) == 0) return *pp = p + 5, OK;
        return DECLINE;
    case 'n':
        if (end - p >= 4 && memcmp(p, "null", 4) == 0) return *pp = p + 4, OK;
        return DECLINE;
    default:
        return number_plain(pp, end);
    }
}

static inline int is_null(const unsigned char **pp, const unsigned char *end) {
    if (end - *pp >= 4 && memcmp(*pp, "null", 4) == 0) {
        *pp += 4;
        return 1;
    }
    return 0;
}

/* ---- field values ---- */

static inline int hexval(unsigned char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* The canonical 36-character form only (8-4-4-4-12 hex digits, either case). */
static int parse_uuid(span s, unsigned char out[16]) {
    if (s.n != 36) return DECLINE;
    int k = 0;
    for (int i = 0; i < 36;) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s.p[i] != '-') return DECLINE;
            i++;
            continue;
        }
        int hi = hexval(s.p[i]), lo = hexval(s.p[i + 1]);
        if (hi < 0 || lo < 0) return DECLINE;
        out[k++] = (unsigned char)(hi << 4 | lo);
        i += 2;
    }
    return OK;
}

/* TENANT_ID_PATTERN: ^[a-z0-9][a-z0-9_-]{0,63}$ */
static int tenant_ok(span s) {
    if (s.n < 1 || s.n > 64) return 0;
    for (Py_ssize_t i = 0; i < s.n; i++) {
        unsigned char c = s.p[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (i > 0 && (c == '_' || c == '-'));
        if (!ok) return 0;
    }
    return 1;
}

static inline int digits(const unsigned char *p, int n, int *out) {
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') return DECLINE;
        v = v * 10 + (p[i] - '0');
    }
    *out = v;
    return OK;
}

static long long days_from_civil(long long y, int m, int d) {
    y -= m <= 2;
    long long era = (y >= 0 ? y : y - 399) / 400;
    long long yoe = y - era * 400;
    long long doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    long long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* YYYY-MM-DDTHH:MM:SS[.f{1,6}](Z|+HH:MM|-HH:MM), a real date and time, years 2..9998 (no range edge an
 * offset could cross); -> epoch microseconds of the instant. */
static int parse_time(span s, long long *us) {
    const unsigned char *p = s.p;
    int y, mo, d, h, mi, se;
    if (s.n < 20 || s.n > 32) return DECLINE;
    if (p[4] != '-' || p[7] != '-' || p[10] != 'T' || p[13] != ':' || p[16] != ':') return DECLINE;
    if (digits(p, 4, &y) || digits(p + 5, 2, &mo) || digits(p + 8, 2, &d) || digits(p + 11, 2, &h) ||
        digits(p + 14, 2, &mi) || digits(p + 17, 2, &se)) {
        return DECLINE;
    }
    static const int dim[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (y < 2 || y > 9998 || mo < 1 || mo > 12 || d < 1 || d > dim[mo - 1] + (mo == 2 && leap) || h > 23 ||
        mi > 59 || se > 59) {
        return DECLINE;
    }
    Py_ssize_t i = 19;
    long long frac = 0;
    if (p[i] == '.') {
        int nd = 0;
        i++;
        while (i < s.n && p[i] >= '0' && p[i] <= '9') {
            if (++nd > 6) return DECLINE;
            frac = frac * 10 + (p[i] - '0');
            i++;
        }
        if (nd == 0) return DECLINE;
        for (; nd < 6; nd++) frac *= 10;
    }
    long long offset = 0;
    if (i + 1 == s.n && p[i] == 'Z') {
        offset = 0;
    } else if (i + 6 == s.n && (p[i] == '+' || p[i] == '-') && p[i + 3] == ':') {
        int oh, om;
        if (digits(p + i + 1, 2, &oh) || digits(p + i + 4, 2, &om) || oh > 23 || om > 59) return DECLINE;
        offset = (p[i] == '-' ? -1 : 1) * (oh * 3600LL + om * 60LL);
    } else {
        return DECLINE;
    }
    long long seconds = days_from_civil(y, mo, d) * 86400LL + h * 3600LL + mi * 60LL + se - offset;
    *us = seconds * 1000000LL + frac;
    return OK;
}

/* ---- tenants: one object per distinct id in a call ---- */

typedef struct {
    Py_ssize_t n;
    unsigned char id[64];
    PyObject *obj; /* owned by the table */
    int skip;
} tenant_slot;

typedef struct {
    tenant_slot *slots;
    size_t cap, used;
} tenants_t;

static unsigned long long fnv(const unsigned char *p, Py_ssize_t n) {
    unsigned long long h = 1469598103934665603ULL;
    for (Py_ssize_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ULL;
    return h;
}

static int tenants_grow(tenants_t *t) {
    size_t cap = t->cap ? t->cap * 2 : 256;
    tenant_slot *slots = PyMem_Calloc(cap, sizeof(tenant_slot));
    if (slots == NULL) return -1;
    for (size_t i = 0; i < t->cap; i++) {
        tenant_slot *old = &t->slots[i];
        if (old->obj == NULL) continue;
        size_t j = fnv(old->id, old->n) & (cap - 1);
        while (slots[j].obj != NULL) j = (j + 1) & (cap - 1);
        slots[j] = *old;
    }
    PyMem_Free(t->slots);
    t->slots = slots;
    t->cap = cap;
    return 0;
}

/* The slot of tenant id s (already checked against the pattern), made on first sight. */
static tenant_slot *tenant_for(tenants_t *t, span s, PyObject *skip_tenants) {
    if ((t->used + 1) * 2 > t->cap && tenants_grow(t) < 0) {
        PyErr_NoMemory();
        return NULL;
    }
    size_t j = fnv(s.p, s.n) & (t->cap - 1);
    for (;; j = (j + 1) & (t->cap - 1)) {
        tenant_slot *slot = &t->slots[j];
        if (slot->obj == NULL) break;
        if (slot->n == s.n && memcmp(slot->id, s.p, (size_t)s.n) == 0) return slot;
    }
    tenant_slot *slot = &t->slots[j];
    PyObject *obj = PyUnicode_FromStringAndSize((const char *)s.p, s.n);
    if (obj == NULL) return NULL;
    int skip = PySet_Contains(skip_tenants, obj); /* a set or frozenset: scan() checked */
    if (skip < 0) {
        Py_DECREF(obj);
        return NULL;
    }
    slot->n = s.n;
    memcpy(slot->id, s.p, (size_t)s.n);
    slot->obj = obj;
    slot->skip = skip;
    t->used++;
    return slot;
}

static void tenants_free(tenants_t *t) {
    for (size_t i = 0; i < t->cap; i++) Py_XDECREF(t->slots[i].obj);
    PyMem_Free(t->slots);
}

static PyObject *ascii_str(span s) {
    PyObject *obj = PyUnicode_New(s.n, 127);
    if (obj != NULL) memcpy(PyUnicode_1BYTE_DATA(obj), s.p, (size_t)s.n);
    return obj;
}

/* ---- one record ---- */

enum {
    F_EVENT_ID, F_TENANT_ID, F_EVENT_TYPE, F_ANONYMOUS_ID, F_OCCURRED_AT, F_RECEIVED_AT, F_SOURCE_ID,
    F_SOURCE_SEQ, F_SCHEMA_VERSION, F_USER_ID, F_PROPERTIES, F_UNKNOWN
};
static const char *const FIELD_NAMES[] = {"event_id",    "tenant_id", "event_type", "anonymous_id",
                                          "occurred_at", "received_at", "source_id", "source_seq",
                                          "schema_version", "user_id", "properties"};
#define REQUIRED_MASK ((1u << F_USER_ID) - 1u) /* every field before user_id */

static Py_ssize_t FIELD_LENS[F_UNKNOWN];

static inline int field_of(span k) {
    for (int f = 0; f < F_UNKNOWN; f++) {
        if (FIELD_LENS[f] == k.n && FIELD_NAMES[f][0] == k.p[0] && memcmp(FIELD_NAMES[f], k.p, (size_t)k.n) == 0) {
            return f;
        }
    }
    return F_UNKNOWN;
}

typedef struct {
    const char *const *names; /* event type strings (UTF-8 of the etypes tuple) */
    const Py_ssize_t *lens;
    int ntypes;
    const char *const *wanted; /* wanted property keys */
    const Py_ssize_t *wlens;
    Py_ssize_t nw;
} spec_t;

typedef struct {
    span tenant, anon;
    int etype;
    long long us;
    unsigned char id[16];
    span wv[MAX_WANTED]; /* wanted values: p NULL = absent or null; only the first nw are cleared */
} parsed_t;

static int id_len_ok(span s) { return s.n >= 1 && s.n <= 128; }

static int parse_properties(const unsigned char **pp, const unsigned char *end, const spec_t *spec, parsed_t *out) {
    const unsigned char *p = *pp;
    if (p >= end || *p != '{') return DECLINE;
    p = ws(p + 1, end);
    if (p < end && *p == '}') {
        *pp = p + 1;
        return OK;
    }
    unsigned long long seen = 0;
    for (;;) {
        span key;
        if (str_plain(&p, end, &key) != OK) return DECLINE;
        p = ws(p, end);
        if (p >= end || *p != ':') return DECLINE;
        p = ws(p + 1, end);
        Py_ssize_t w;
        for (w = 0; w < spec->nw; w++) {
            if (spec->wlens[w] == key.n && memcmp(spec->wanted[w], key.p, (size_t)key.n) == 0) break;
        }
        if (w < spec->nw) {
            if (seen & (1ULL << w)) return DECLINE; /* a repeated wanted key: the contract keeps the last */
            seen |= 1ULL << w;
            if (!is_null(&p, end) && str_plain(&p, end, &out->wv[w]) != OK) return DECLINE;
        } else if (skip_value(&p, end, 1) != OK) {
            return DECLINE;
        }
        p = ws(p, end);
        if (p >= end) return DECLINE;
        if (*p == '}') {
            *pp = p + 1;
            return OK;
        }
        if (*p != ',') return DECLINE;
        p = ws(p + 1, end);
    }
}

static int parse_record(const unsigned char *p, const unsigned char *end, const spec_t *spec, parsed_t *out) {
    memset(out, 0, offsetof(parsed_t, wv));
    memset(out->wv, 0, (size_t)spec->nw * sizeof(span));
    unsigned int seen = 0;
    p = ws(p, end);
    if (p >= end || *p != '{') return DECLINE;
    p = ws(p + 1, end);
    if (p < end && *p == '}') return DECLINE;
    for (;;) {
        span key, s;
        if (str_plain(&p, end, &key) != OK) return DECLINE;
        p = ws(p, end);
        if (p >= end || *p != ':') return DECLINE;
        p = ws(p + 1, end);
        int f = field_of(key);
        if (f != F_UNKNOWN) {
            if (seen & (1u << f)) return DECLINE; /* a repeated field: the contract keeps the last */
            seen |= 1u << f;
        }
        switch (f) {
        case F_EVENT_ID:
            if (str_plain(&p, end, &s) || parse_uuid(s, out->id)) return DECLINE;
            break;
        case F_TENANT_ID:
            if (str_plain(&p, end, &out->tenant) || !tenant_ok(out->tenant)) return DECLINE;
            break;
        case F_EVENT_TYPE: {
            if (str_plain(&p, end, &s)) return DECLINE;
            int t;
            for (t = 0; t < spec->ntypes; t++) {
                if (spec->lens[t] == s.n && memcmp(spec->names[t], s.p, (size_t)s.n) == 0) break;
            }
            if (t == spec->ntypes) return DECLINE;
            out->etype = t;
            break;
        }
        case F_ANONYMOUS_ID:
            if (str_plain(&p, end, &out->anon) || !id_len_ok(out->anon)) return DECLINE;
            break;
        case F_SOURCE_ID:
            if (str_plain(&p, end, &s) || !id_len_ok(s)) return DECLINE;
            break;
        case F_USER_ID:
            if (!is_null(&p, end) && (str_plain(&p, end, &s) || !id_len_ok(s))) return DECLINE;
            break;
        case F_OCCURRED_AT: {
            long long ignored;
            if (str_plain(&p, end, &s) || parse_time(s, &ignored)) return DECLINE;
            break;
        }
        case F_RECEIVED_AT:
            if (str_plain(&p, end, &s) || parse_time(s, &out->us)) return DECLINE;
            break;
        case F_SOURCE_SEQ: { /* a plain non-negative integer */
            const unsigned char *q = p;
            while (q < end && *q >= '0' && *q <= '9') q++;
            if (q == p || q - p > 18 || (*p == '0' && q - p > 1)) return DECLINE;
            if (q < end && (*q == '.' || *q == 'e' || *q == 'E')) return DECLINE;
            p = q;
            break;
        }
        case F_SCHEMA_VERSION:
            if (p >= end || *p != '1') return DECLINE;
            p++;
            if (p < end && ((*p >= '0' && *p <= '9') || *p == '.' || *p == 'e' || *p == 'E')) return DECLINE;
            break;
        case F_PROPERTIES:
            if (parse_properties(&p, end, spec, out)) return DECLINE;
            break;
        default:
            if (skip_value(&p, end, 1)) return DECLINE;
        }
        p = ws(p, end);
        if (p >= end) return DECLINE;
        if (*p == '}') break;
        if (*p != ',') return DECLINE;
        p = ws(p + 1, end);
    }
    if (ws(p + 1, end) != end) return DECLINE;
    return (seen & REQUIRED_MASK) == REQUIRED_MASK ? OK : DECLINE;
}

/* ---- the Scan object ---- */

static void entry_clear(ScanObject *self, Py_ssize_t i) {
    entry_t *e = &self->entries[i];
    Py_CLEAR(e->tenant);
    Py_CLEAR(e->anon);
    Py_CLEAR(e->id_obj);
    for (Py_ssize_t w = 0; w < self->nw; w++) Py_CLEAR(self->wanted[i * self->nw + w]);
    e->filled = 0;
}

static void scan_dealloc(ScanObject *self) {
    for (Py_ssize_t i = 0; i < self->n; i++) entry_clear(self, i);
    PyMem_Free(self->entries);
    PyMem_Free(self->wanted);
    PyMem_Free(self->order);
    Py_XDECREF(self->records);
    Py_XDECREF(self->etypes);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *s_data;

PyObject *scan(PyObject *module, PyObject *args) {
    PyObject *records, *etypes, *wanted, *skip_tenants;
    Py_ssize_t max_bytes;
    long long limit_us;
    if (!PyArg_ParseTuple(args, "O!nLO!O!O", &PyList_Type, &records, &max_bytes, &limit_us, &PyTuple_Type, &etypes,
                          &PyTuple_Type, &wanted, &skip_tenants)) {
        return NULL;
    }
    if (!PyAnySet_Check(skip_tenants)) {
        PyErr_SetString(PyExc_TypeError, "scan: skip_tenants must be a set or frozenset");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(records), nt = PyTuple_GET_SIZE(etypes), nw = PyTuple_GET_SIZE(wanted);
    if (nt > 255 || nw > MAX_WANTED) {
        PyErr_SetString(PyExc_ValueError, "scan: at most 255 event types and MAX_WANTED (64) wanted properties");
        return NULL;
    }
    const char *names[255], *wnames[MAX_WANTED];
    Py_ssize_t lens[255], wlens[MAX_WANTED];
    for (Py_ssize_t t = 0; t < nt; t++) {
        if ((names[t] = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(etypes, t), &lens[t])) == NULL) return NULL;
    }
    for (Py_ssize_t w = 0; w < nw; w++) {
        if ((wnames[w] = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(wanted, w), &wlens[w])) == NULL) return NULL;
    }
    spec_t spec = {names, lens, (int)nt, wnames, wlens, nw};

    ScanObject *self = PyObject_New(ScanObject, &ScanType);
    if (self == NULL) return NULL;
    self->n = n;
    self->nw = nw;
    self->entries = PyMem_Calloc(n ? n : 1, sizeof(entry_t));
    self->wanted = PyMem_Calloc(n * nw > 0 ? n * nw : 1, sizeof(PyObject *));
    self->order = NULL;
    self->norder = -1;
    Py_INCREF(records);
    self->records = records;
    Py_INCREF(etypes);
    self->etypes = etypes;
    PyObject *declined = PyList_New(0);
    tenants_t tenants = {NULL, 0, 0};
    if (self->entries == NULL || self->wanted == NULL || declined == NULL) {
        if (self->entries == NULL || self->wanted == NULL) self->n = 0; /* nothing for dealloc to clear */
        PyErr_NoMemory();
        goto error;
    }
    parsed_t rec;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *data = PyObject_GetAttr(PyList_GET_ITEM(records, i), s_data);
        if (data == NULL) goto error;
        int ok = PyBytes_CheckExact(data) && PyBytes_GET_SIZE(data) <= max_bytes;
        if (ok) {
            const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(data);
            ok = parse_record(p, p + PyBytes_GET_SIZE(data), &spec, &rec) == OK && rec.us <= limit_us;
        }
        Py_DECREF(data); /* the record keeps the bytes alive: spans stay valid below */
        tenant_slot *slot = NULL;
        if (ok) {
            slot = tenant_for(&tenants, rec.tenant, skip_tenants);
            if (slot == NULL) goto error;
            ok = !slot->skip;
        }
        if (!ok) {
            PyObject *idx = PyLong_FromSsize_t(i);
            if (idx == NULL || PyList_Append(declined, idx) < 0) {
                Py_XDECREF(idx);
                goto error;
            }
            Py_DECREF(idx);
            continue;
        }
        entry_t *e = &self->entries[i];
        Py_INCREF(slot->obj);
        e->tenant = slot->obj;
        e->etype = (unsigned char)rec.etype;
        e->us = rec.us;
        memcpy(e->id, rec.id, 16);
        e->filled = 1;
        if ((e->anon = ascii_str(rec.anon)) == NULL) goto error;
        for (Py_ssize_t w = 0; w < nw; w++) {
            if (rec.wv[w].p != NULL && (self->wanted[i * nw + w] = ascii_str(rec.wv[w])) == NULL) goto error;
        }
    }
    tenants_free(&tenants);
    return Py_BuildValue("(NN)", (PyObject *)self, declined);
error:
    tenants_free(&tenants);
    Py_XDECREF(declined);
    Py_DECREF(self);
    return NULL;
}

static int check_index(ScanObject *self, Py_ssize_t i) {
    if (i < 0 || i >= self->n) {
        PyErr_SetString(PyExc_IndexError, "Scan: record index out of range");
        return -1;
    }
    return 0;
}

/* put(i, tenant, etype_index, anonymous_id, received_us, id16, wanted_values) */
static PyObject *scan_put(ScanObject *self, PyObject *args) {
    Py_ssize_t i, etype;
    PyObject *tenant, *anon, *values;
    long long us;
    const char *id;
    Py_ssize_t idlen;
    if (!PyArg_ParseTuple(args, "nUnULy#O!", &i, &tenant, &etype, &anon, &us, &id, &idlen, &PyTuple_Type, &values)) {
        return NULL;
    }
    if (check_index(self, i) < 0) return NULL;
    if (idlen != 16 || etype < 0 || etype >= PyTuple_GET_SIZE(self->etypes) || PyTuple_GET_SIZE(values) != self->nw) {
        PyErr_SetString(PyExc_ValueError, "Scan.put: id must be 16 bytes, etype an index, values one per wanted key");
        return NULL;
    }
    entry_clear(self, i);
    entry_t *e = &self->entries[i];
    Py_INCREF(tenant);
    e->tenant = tenant;
    Py_INCREF(anon);
    e->anon = anon;
    e->etype = (unsigned char)etype;
    e->us = us;
    memcpy(e->id, id, 16);
    for (Py_ssize_t w = 0; w < self->nw; w++) {
        PyObject *v = PyTuple_GET_ITEM(values, w);
        if (v != Py_None) {
            Py_INCREF(v);
            self->wanted[i * self->nw + w] = v;
        }
    }
    e->filled = 1;
    PyMem_Free(self->order);
    self->order = NULL;
    self->norder = -1;
    Py_RETURN_NONE;
}

static PyObject *scan_entry(ScanObject *self, PyObject *arg) {
    Py_ssize_t i = PyLong_AsSsize_t(arg);
    if ((i == -1 && PyErr_Occurred()) || check_index(self, i) < 0) return NULL;
    entry_t *e = &self->entries[i];
    if (!e->filled) {
        PyErr_SetString(PyExc_KeyError, "Scan.entry: record not accepted");
        return NULL;
    }
    PyObject *values = PyTuple_New(self->nw);
    if (values == NULL) return NULL;
    for (Py_ssize_t w = 0; w < self->nw; w++) {
        PyObject *v = self->wanted[i * self->nw + w];
        v = v ? v : Py_None;
        Py_INCREF(v);
        PyTuple_SET_ITEM(values, w, v);
    }
    return Py_BuildValue("(OnOLy#N)", e->tenant, (Py_ssize_t)e->etype, e->anon, e->us, (const char *)e->id,
                         (Py_ssize_t)16, values);
}

static int make_order(ScanObject *self) {
    if (self->order != NULL) return 0;
    self->order = PyMem_Malloc((self->n ? self->n : 1) * sizeof(Py_ssize_t));
    if (self->order == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->norder = 0;
    for (Py_ssize_t i = 0; i < self->n; i++) {
        if (self->entries[i].filled) self->order[self->norder++] = i;
    }
    return 0;
}

/* order() -> the record indices of the events, in order (positions in ids() index this list). */
static PyObject *scan_order(ScanObject *self, PyObject *unused) {
    if (make_order(self) < 0) return NULL;
    PyObject *out = PyList_New(self->norder);
    if (out == NULL) return NULL;
    for (Py_ssize_t k = 0; k < self->norder; k++) {
        PyObject *idx = PyLong_FromSsize_t(self->order[k]);
        if (idx == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, k, idx);
    }
    return out;
}

/* ids() -> each event's 16-byte id, in order. */
static PyObject *scan_ids(ScanObject *self, PyObject *unused) {
    if (make_order(self) < 0) return NULL;
    PyObject *out = PyList_New(self->norder);
    if (out == NULL) return NULL;
    for (Py_ssize_t k = 0; k < self->norder; k++) {
        entry_t *e = &self->entries[self->order[k]];
        if (e->id_obj == NULL && (e->id_obj = PyBytes_FromStringAndSize((const char *)e->id, 16)) == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        Py_INCREF(e->id_obj);
        PyList_SET_ITEM(out, k, e->id_obj);
    }
    return out;
}

/* The positions (into order) to use: keep (a list of positions) or, when None, all of them. */
static int positions(ScanObject *self, PyObject *keep, Py_ssize_t *count) {
    if (make_order(self) < 0) return -1;
    if (keep == Py_None) {
        *count = self->norder;
        return 0;
    }
    if (!PyList_Check(keep)) {
        PyErr_SetString(PyExc_TypeError, "Scan: keep must be a list of positions or None");
        return -1;
    }
    *count = PyList_GET_SIZE(keep);
    return 0;
}

static int position(ScanObject *self, PyObject *keep, Py_ssize_t k, Py_ssize_t *i) {
    Py_ssize_t pos = k;
    if (keep != Py_None) {
        pos = PyLong_AsSsize_t(PyList_GET_ITEM(keep, k));
        if (pos == -1 && PyErr_Occurred()) return -1;
        if (pos < 0 || pos >= self->norder) {
            PyErr_SetString(PyExc_IndexError, "Scan: keep position out of range");
            return -1;
        }
    }
    *i = self->order[pos];
    return 0;
}

/* by_tenant(keep) -> {tenant_id: (records, ids, received)}: as aggregate._by_tenant's dict, for the kept
 * events (ids() must have been called: the id objects are shared). */
static PyObject *scan_by_tenant(ScanObject *self, PyObject *keep) {
    Py_ssize_t count;
    if (positions(self, keep, &count) < 0) return NULL;
    PyObject *groups = PyDict_New();
    if (groups == NULL) return NULL;
    for (Py_ssize_t k = 0; k < count; k++) {
        Py_ssize_t i;
        if (position(self, keep, k, &i) < 0) goto error;
        entry_t *e = &self->entries[i];
        if (e->id_obj == NULL && (e->id_obj = PyBytes_FromStringAndSize((const char *)e->id, 16)) == NULL) goto error;
        PyObject *group = PyDict_GetItemWithError(groups, e->tenant);
        if (group == NULL) {
            if (PyErr_Occurred() || (group = Py_BuildValue("([][][])")) == NULL) goto error;
            int rc = PyDict_SetItem(groups, e->tenant, group);
            Py_DECREF(group); /* the dict holds it */
            if (rc < 0) goto error;
        }
        PyObject *received = PyFloat_FromDouble((double)e->us / 1e6); /* == received_at.timestamp() */
        if (received == NULL) goto error;
        int rc = PyList_Append(PyTuple_GET_ITEM(group, 0), PyList_GET_ITEM(self->records, i)) < 0 ||
                 PyList_Append(PyTuple_GET_ITEM(group, 1), e->id_obj) < 0 ||
                 PyList_Append(PyTuple_GET_ITEM(group, 2), received) < 0;
        Py_DECREF(received);
        if (rc) goto error;
    }
    return groups;
error:
    Py_DECREF(groups);
    return NULL;
}

/* fold(views, keep, page_view, rules, skip): as aggregate._fold_python over the kept events, minus those whose
 * record index is in skip (folded by the caller: suppressed subjects).
 *   views: dict tenant_id -> (cells, visitors, pages, segments)
 *   rules: tuple aligned with etypes: per type, a tuple of (rule index, ((wanted slot, value), ...))
 *   page_view: the index of page_view in etypes; the path is wanted slot 0. */
static PyObject *scan_fold(ScanObject *self, PyObject *args) {
    PyObject *views, *keep, *rules, *skip;
    Py_ssize_t page_view;
    if (!PyArg_ParseTuple(args, "O!OnO!O", &PyDict_Type, &views, &keep, &page_view, &PyTuple_Type, &rules, &skip)) {
        return NULL;
    }
    if (PyTuple_GET_SIZE(rules) != PyTuple_GET_SIZE(self->etypes) || self->nw < 1) {
        PyErr_SetString(PyExc_ValueError, "Scan.fold: one rules entry per event type, and the path wanted first");
        return NULL;
    }
    Py_ssize_t count;
    if (positions(self, keep, &count) < 0) return NULL;
    unit_cache minutes = {0, NULL}, hours = {0, NULL};
    PyObject *key = NULL;
    for (Py_ssize_t k = 0; k < count; k++) {
        Py_ssize_t i;
        if (position(self, keep, k, &i) < 0) goto error;
        if (skip != Py_None) {
            PyObject *idx = PyLong_FromSsize_t(i);
            int skipped = idx ? PySet_Contains(skip, idx) : -1;
            Py_XDECREF(idx);
            if (skipped < 0) goto error;
            if (skipped) continue;
        }
        entry_t *e = &self->entries[i];
        PyObject **wv = &self->wanted[i * self->nw];
        PyObject *view = PyDict_GetItemWithError(views, e->tenant);
        if (view == NULL) {
            if (!PyErr_Occurred()) PyErr_SetObject(PyExc_KeyError, e->tenant);
            goto error;
        }
        PyObject *cells = PyTuple_GET_ITEM(view, 0), *visitors = PyTuple_GET_ITEM(view, 1);
        PyObject *pages = PyTuple_GET_ITEM(view, 2), *segments = PyTuple_GET_ITEM(view, 3);
        double ts = (double)e->us / 1e6;
        long long second = (long long)ts;
        PyObject *minute = unit(&minutes, floordiv(second, 60));
        PyObject *hour = unit(&hours, floordiv(second, 3600));
        if (minute == NULL || hour == NULL) goto error;
        Py_XSETREF(key, PyTuple_Pack(2, minute, PyTuple_GET_ITEM(self->etypes, e->etype)));
        if (key == NULL || add_count(cells, key, 1) < 0) goto error;
        Py_SETREF(key, PyTuple_Pack(2, hour, e->anon));
        if (key == NULL || PySet_Add(visitors, key) < 0) goto error;
        if (e->etype == page_view && wv[0] != NULL && PyUnicode_CheckExact(wv[0])) {
            Py_SETREF(key, PyTuple_Pack(2, hour, wv[0]));
            if (key == NULL || add_count(pages, key, 1) < 0) goto error;
        }
        PyObject *matching = PyTuple_GET_ITEM(rules, e->etype);
        for (Py_ssize_t r = 0; r < PyTuple_GET_SIZE(matching); r++) {
            PyObject *rule = PyTuple_GET_ITEM(matching, r), *where = PyTuple_GET_ITEM(rule, 1);
            int m = 1;
            for (Py_ssize_t c = 0; c < PyTuple_GET_SIZE(where) && m == 1; c++) {
                PyObject *cond = PyTuple_GET_ITEM(where, c);
                Py_ssize_t slot = PyLong_AsSsize_t(PyTuple_GET_ITEM(cond, 0));
                if (slot < 0 || slot >= self->nw) {
                    if (!PyErr_Occurred()) PyErr_SetString(PyExc_IndexError, "Scan.fold: wanted slot out of range");
                    goto error;
                }
                PyObject *got = wv[slot] ? wv[slot] : Py_None;
                m = PyObject_RichCompareBool(got, PyTuple_GET_ITEM(cond, 1), Py_EQ);
            }
            if (m < 0) goto error;
            if (m == 0) continue;
            if (add_hit(segments, PyTuple_GET_ITEM(rule, 0), e->anon, ts) < 0) goto error;
        }
    }
    Py_XDECREF(key);
    Py_XDECREF(minutes.obj);
    Py_XDECREF(hours.obj);
    Py_RETURN_NONE;
error:
    Py_XDECREF(key);
    Py_XDECREF(minutes.obj);
    Py_XDECREF(hours.obj);
    return NULL;
}

static PyMethodDef scan_methods[] = {
    {"put", (PyCFunction)scan_put, METH_VARARGS, "Fill in a declined record the contract accepted."},
    {"entry", (PyCFunction)scan_entry, METH_O, "(tenant, etype index, anonymous_id, received_us, id16, wanted values)."},
    {"order", (PyCFunction)scan_order, METH_NOARGS, "Record indices of the events, in order."},
    {"ids", (PyCFunction)scan_ids, METH_NOARGS, "Each event's 16-byte id, in order."},
    {"by_tenant", (PyCFunction)scan_by_tenant, METH_O, "{tenant: (records, ids, received)} of the kept events."},
    {"fold", (PyCFunction)scan_fold, METH_VARARGS, "Fold the kept events into per-tenant aggregates."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ScanType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "streaming.speed._native.Scan",
    .tp_basicsize = sizeof(ScanObject),
    .tp_dealloc = (destructor)scan_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A batch of records scanned into columns (see _scan.c).",
    .tp_methods = scan_methods,
};

int scan_init(PyObject *module) {
    for (int f = 0; f < F_UNKNOWN; f++) FIELD_LENS[f] = (Py_ssize_t)strlen(FIELD_NAMES[f]);
    if ((s_data = PyUnicode_InternFromString("data")) == NULL || PyType_Ready(&ScanType) < 0) return -1;
    Py_INCREF(&ScanType);
    if (PyModule_AddObject(module, "Scan", (PyObject *)&ScanType) < 0) {
        Py_DECREF(&ScanType);
        return -1;
    }
    return 0;
}
