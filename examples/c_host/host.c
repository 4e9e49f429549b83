/*
 * host.c: fcn-edge's Segmenter inside a C program that embeds Python.
 *
 *     ./host MODEL.onnx [IMAGE.ppm] [FRAMES]
 *
 * The frames live in C memory (malloc'd H×W×3 uint8, BGR, rows packed: what a camera SDK hands
 * over). Each one goes to Python as a read-only memoryview over that memory (no copy) and
 * `seg(mv, shape=(h, w, 3))` returns an H×W label array, read here through the buffer protocol
 * (no copy either). With a raw-IO + argmax artifact (`fcn-edge export --raw-io --argmax`)
 * fcn-edge makes no copy of the pixels at all: `seg.stats.copies` stays 0.
 *
 * Without IMAGE.ppm the frames are a synthetic pattern that moves 4 pixels per frame (see
 * fill_pattern); with it (binary P6, 8 bits) every frame is that image. Before the timed frames
 * the program prints the label map of a small pattern frame, so its result can be compared with
 * Python's (tests/examples/test_examples.py does).
 *
 * Which Python: set FCN_EDGE_PYTHON to a virtual environment's python (or activate the venv:
 * VIRTUAL_ENV is used too) and the embedded interpreter starts as that venv would: its
 * site-packages, including a `pip install -e .` of fcn-edge. See README.md.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { FRAME_H = 240, FRAME_W = 320, PATTERN_H = 24, PATTERN_W = 32, DEFAULT_FRAMES = 10 };

/* ---- frames in C memory ------------------------------------------------------------------- */

/* The synthetic frame t, BGR: stripes in blue and green, a checkerboard in red and a disc in
 * the middle; the stripes and checkerboard move left by 4 pixels per frame. Integer arithmetic
 * only, so Python can compute the same pixels (tests/examples/test_examples.py: pattern()). */
static void fill_pattern(uint8_t *bgr, int h, int w, int t)
{
    int cy = h / 2, cx = w / 2, radius = (h < w ? h : w) / 4;
    for (int y = 0; y < h; y++) {
        for (int x = 0; x < w; x++) {
            uint8_t *px = bgr + ((size_t)y * w + x) * 3;
            int xs = x + 4 * t, dy = y - cy, dx = x - cx;
            if (dx * dx + dy * dy < radius * radius) {
                px[0] = 40; px[1] = 200; px[2] = 240;
            } else {
                px[0] = (uint8_t)((xs * 3) & 255);
                px[1] = (uint8_t)((y * 5) & 255);
                px[2] = (((xs / 16) + (y / 16)) & 1) ? 220 : 30;
            }
        }
    }
}

/* Skips whitespace and '#' comments between the fields of a PPM header. */
static int ppm_field(FILE *f, int *value)
{
    int c;
    while ((c = fgetc(f)) != EOF) {
        if (c == '#') {
            while ((c = fgetc(f)) != EOF && c != '\n') {}
        } else if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
            ungetc(c, f);
            return fscanf(f, "%d", value) == 1 ? 0 : -1;
        }
    }
    return -1;
}

/* A binary PPM (P6, maxval 255) as a malloc'd BGR frame; NULL with a message on failure. */
static uint8_t *read_ppm(const char *path, int *h, int *w)
{
    FILE *f = fopen(path, "rb");
    char magic[3] = {0};
    int maxval = 0;
    uint8_t *bgr = NULL;
    if (!f) {
        perror(path);
        return NULL;
    }
    if (fread(magic, 1, 2, f) != 2 || strcmp(magic, "P6") != 0 || ppm_field(f, w) ||
        ppm_field(f, h) || ppm_field(f, &maxval) || maxval != 255 || *w <= 0 || *h <= 0) {
        fprintf(stderr, "%s: not a binary 8-bit PPM (P6, maxval 255)\n", path);
        goto fail;
    }
    fgetc(f); /* the single whitespace byte after maxval */
    size_t n = (size_t)*h * *w * 3;
    if (!(bgr = malloc(n)) || fread(bgr, 1, n, f) != n) {
        fprintf(stderr, "%s: %s\n", path, bgr ? "truncated pixel data" : "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < n; i += 3) { /* PPM is RGB; OpenCV's order, which we hand on, BGR */
        uint8_t r = bgr[i];
        bgr[i] = bgr[i + 2];
        bgr[i + 2] = r;
    }
    fclose(f);
    return bgr;
fail:
    free(bgr);
    fclose(f);
    return NULL;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* ---- Python ------------------------------------------------------------------------------- */

/* Starts Python as the venv named by FCN_EDGE_PYTHON or VIRTUAL_ENV would start (its
 * pyvenv.cfg is found next to that executable), else as the Python we were linked against.
 * PYTHONPATH and the other PYTHON* variables are honoured as by `python` itself. */
static PyStatus start_python(void)
{
    PyConfig config;
    PyStatus status;
    char venv_python[4096];
    const char *python = getenv("FCN_EDGE_PYTHON");
    const char *venv = getenv("VIRTUAL_ENV");

    PyConfig_InitPythonConfig(&config);
    if ((!python || !*python) && venv && *venv) {
        snprintf(venv_python, sizeof venv_python, "%s/bin/python", venv);
        python = venv_python;
    }
    if (python && *python) {
        /* Both: Python versions differ in which of the two they locate the venv from. */
        status = PyConfig_SetBytesString(&config, &config.program_name, python);
        if (PyStatus_Exception(status))
            goto done;
        status = PyConfig_SetBytesString(&config, &config.executable, python);
        if (PyStatus_Exception(status))
            goto done;
    }
    status = Py_InitializeFromConfig(&config);
done:
    PyConfig_Clear(&config);
    return status;
}

/* An integer attribute (`obj.name`), or -1 with a Python error set. */
static long long_attr(PyObject *obj, const char *name)
{
    PyObject *value = PyObject_GetAttrString(obj, name);
    long result = value ? PyLong_AsLong(value) : -1;
    Py_XDECREF(value);
    return result;
}

/* seg(frame) with the frame's C memory behind a read-only memoryview: a new reference to the
 * labels, or NULL with a Python error set. */
static PyObject *segment(PyObject *seg, uint8_t *bgr, int h, int w)
{
    PyObject *labels = NULL, *args = NULL, *kwargs = NULL, *done = NULL;
    PyObject *view = PyMemoryView_FromMemory((char *)bgr, (Py_ssize_t)h * w * 3, PyBUF_READ);
    if (!view)
        return NULL;
    if (!(args = PyTuple_Pack(1, view)) ||
        !(kwargs = Py_BuildValue("{s:(iii)}", "shape", h, w, 3)))
        goto done;
    labels = PyObject_Call(seg, args, kwargs);
    /* Give the memory back: release() fails if anything in Python still refers to the frame,
     * which would then read memory that C may refill or free. */
    if (labels && !(done = PyObject_CallMethod(view, "release", NULL)))
        Py_CLEAR(labels);
done:
    Py_XDECREF(done);
    Py_XDECREF(kwargs);
    Py_XDECREF(args);
    Py_DECREF(view);
    return labels;
}

/* Reads an H×W label array in place (uint8, or int32 beyond 256 classes): adds each pixel to
 * hist[class] and, if `rows`, prints the map, one row per line. 0, or -1 with an error set. */
static int read_labels(PyObject *labels, int h, int w, long *hist, long classes, int rows)
{
    Py_buffer buf;
    int rc = -1;
    if (PyObject_GetBuffer(labels, &buf, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
        return -1;
    const char *fmt = buf.format ? buf.format : "B";
    int u8 = buf.itemsize == 1 && strcmp(fmt, "B") == 0;
    int i32 = buf.itemsize == 4 && (strcmp(fmt, "i") == 0 || strcmp(fmt, "<i") == 0);
    if (buf.ndim != 2 || buf.shape[0] != h || buf.shape[1] != w || !(u8 || i32)) {
        PyErr_Format(PyExc_ValueError, "expected %dx%d uint8/int32 labels, got %d dims of "
                     "format '%s'", h, w, buf.ndim, fmt);
        goto done;
    }
    for (Py_ssize_t i = 0; i < (Py_ssize_t)h * w; i++) {
        long label = u8 ? ((const uint8_t *)buf.buf)[i] : ((const int32_t *)buf.buf)[i];
        if (label < 0 || label >= classes) {
            PyErr_Format(PyExc_ValueError, "label %ld outside the %ld classes", label, classes);
            goto done;
        }
        hist[label]++;
        if (rows)
            printf("%ld%c", label, i % w == w - 1 ? '\n' : ' ');
    }
    rc = 0;
done:
    PyBuffer_Release(&buf);
    return rc;
}

static void print_histogram(const char *what, const long *hist, long classes)
{
    printf("%s", what);
    for (long c = 0; c < classes; c++)
        if (hist[c])
            printf(" %ld:%ld", c, hist[c]);
    printf("\n");
}

/* ---- the program -------------------------------------------------------------------------- */

/* The labels of the small pattern frame, printed row by row: what a test compares with Python's
 * `seg(pattern)`. 0, or -1 with a Python error set. */
static int print_pattern_labels(PyObject *seg, long classes, long *hist)
{
    int rc = -1;
    PyObject *labels = NULL;
    uint8_t *bgr = malloc((size_t)PATTERN_H * PATTERN_W * 3);
    if (!bgr) {
        PyErr_NoMemory();
        return -1;
    }
    fill_pattern(bgr, PATTERN_H, PATTERN_W, 0);
    printf("pattern %dx%d labels:\n", PATTERN_H, PATTERN_W);
    if ((labels = segment(seg, bgr, PATTERN_H, PATTERN_W)))
        rc = read_labels(labels, PATTERN_H, PATTERN_W, hist, classes, 1);
    Py_XDECREF(labels);
    free(bgr);
    return rc;
}

/* Segments `frames` frames from one C buffer (refilled with the moving pattern unless it holds
 * an image) and prints each one's time and histogram. 0, or -1 with a Python error set. */
static int segment_frames(PyObject *seg, uint8_t *bgr, int h, int w, int synthetic, int frames,
                          long classes, long *hist)
{
    double total = 0;
    for (int t = 0; t < frames; t++) {
        if (synthetic)
            fill_pattern(bgr, h, w, t); /* where a camera would write the next frame */
        memset(hist, 0, (size_t)classes * sizeof *hist);
        double start = now_ms();
        PyObject *labels = segment(seg, bgr, h, w);
        if (!labels)
            return -1;
        double ms = now_ms() - start;
        int rc = read_labels(labels, h, w, hist, classes, 0);
        Py_DECREF(labels);
        if (rc < 0)
            return -1;
        total += ms;
        char what[80];
        snprintf(what, sizeof what, "frame %d %dx%d %.2f ms histogram", t, h, w, ms);
        print_histogram(what, hist, classes);
    }
    printf("%d frames, %.2f ms per frame (%.1f FPS)\n", frames, total / frames,
           total > 0 ? frames * 1e3 / total : 0.0);
    return 0;
}

/* Prints the class names and the copies of pixel data fcn-edge made (`seg.stats`): none for a
 * raw-IO + argmax artifact. 0, or -1 with a Python error set. */
static int print_summary(PyObject *seg, PyObject *classes)
{
    PyObject *stats = PyObject_GetAttrString(seg, "stats");
    long copies = stats ? long_attr(stats, "copies") : -1;
    long frames = stats ? long_attr(stats, "frames") : -1;
    Py_XDECREF(stats);
    if (copies < 0 || frames < 0)
        return -1;
    printf("classes:");
    for (Py_ssize_t c = 0; c < PyTuple_GET_SIZE(classes); c++) {
        const char *name = PyUnicode_AsUTF8(PyTuple_GET_ITEM(classes, c));
        if (!name)
            return -1;
        printf(" %zd=%s", c, name);
    }
    printf("\nfcn-edge copies: %ld over %ld frames (%s)\n", copies, frames, copies == 0 ?
           "zero-copy" : "this artifact needs copies: see fcn_edge/runtime/segmenter.py");
    return 0;
}

/* `seg.classes` as a tuple (a new reference), or NULL with a Python error set. */
static PyObject *class_names(PyObject *seg)
{
    PyObject *classes = PyObject_GetAttrString(seg, "classes");
    PyObject *names = classes ? PySequence_Tuple(classes) : NULL;
    Py_XDECREF(classes);
    return names;
}

/* Opens the Segmenter, runs the pattern and the frames, closes it; the exit code. */
static int run(const char *model, const char *image, int frames)
{
    int rc = 1, h = FRAME_H, w = FRAME_W;
    long classes = 0, *hist = NULL;
    uint8_t *bgr = NULL;
    PyObject *module = NULL, *seg = NULL, *names = NULL, *text = NULL, *reset = NULL;

    if (!(module = PyImport_ImportModule("fcn_edge.runtime"))) {
        PyErr_Print();
        fprintf(stderr, "hint: set FCN_EDGE_PYTHON to the python of an environment where "
                "fcn-edge is installed (see README.md)\n");
        goto done;
    }
    if (!(seg = PyObject_CallMethod(module, "Segmenter", "s", model)) ||
        !(names = class_names(seg)) || !(text = PyObject_Str(seg)))
        goto fail;
    classes = (long)PyTuple_GET_SIZE(names);
    const char *description = PyUnicode_AsUTF8(text);
    if (!description)
        goto fail;
    PyObject *prefix = PySys_GetObject("prefix"); /* borrowed */
    printf("python %s in %s\n%s\n", Py_GetVersion(),
           prefix && PyUnicode_Check(prefix) ? PyUnicode_AsUTF8(prefix) : "?", description);
    if (!(hist = calloc((size_t)classes, sizeof *hist))) {
        PyErr_NoMemory();
        goto fail;
    }
    if (image && !(bgr = read_ppm(image, &h, &w)))
        goto done; /* read_ppm said why */
    if (!image && !(bgr = malloc((size_t)h * w * 3))) {
        PyErr_NoMemory();
        goto fail;
    }
    if (print_pattern_labels(seg, classes, hist) < 0)
        goto fail;
    if (!(reset = PyObject_CallMethod(seg, "reset_stats", NULL)) ||
        segment_frames(seg, bgr, h, w, !image, frames, classes, hist) < 0 ||
        print_summary(seg, names) < 0)
        goto fail;
    rc = 0;
    goto done;
fail:
    fflush(stdout); /* what we printed first, then Python's traceback */
    PyErr_Print();
done:
    if (seg) { /* close the backend now, not whenever the interpreter gets round to it */
        PyObject *closed = PyObject_CallMethod(seg, "close", NULL);
        if (!closed) {
            PyErr_Print();
            rc = 1;
        }
        Py_XDECREF(closed);
    }
    Py_XDECREF(reset);
    Py_XDECREF(text);
    Py_XDECREF(names);
    Py_XDECREF(seg);
    Py_XDECREF(module);
    free(hist);
    free(bgr);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 4) {
        fprintf(stderr, "usage: %s MODEL.onnx [IMAGE.ppm] [FRAMES]\n"
                "  FCN_EDGE_PYTHON=/path/to/venv/bin/python selects the environment\n", argv[0]);
        return 2;
    }
    const char *image = argc > 2 && strcmp(argv[2], "-") != 0 ? argv[2] : NULL;
    int frames = argc > 3 ? atoi(argv[3]) : DEFAULT_FRAMES;
    if (frames < 1) {
        fprintf(stderr, "FRAMES must be a positive number, got %s\n", argv[3]);
        return 2;
    }
    PyStatus status = start_python();
    if (PyStatus_Exception(status))
        Py_ExitStatusException(status); /* prints why and exits non-zero */
    int rc = run(argv[1], image, frames);
    if (Py_FinalizeEx() < 0)
        rc = 120; /* as `python` does when flushing stdout fails at exit */
    return rc;
}
