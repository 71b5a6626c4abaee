# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The compiled half of ``request_rows``: RequestEvent / RequestBatch bodies (current
schemas) read into one tuple per event. Anything it cannot read exactly as fastavro would
raises ``ValueError``, and the caller decodes that message with the codec instead."""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.string cimport memcpy


cdef struct Reader:
    const unsigned char* buf
    Py_ssize_t pos
    Py_ssize_t end


cdef long long read_long(Reader* r) except? -1:
    """Avro int/long: a zig-zag varint of at most 64 bits."""
    cdef unsigned long long acc = 0
    cdef unsigned long long byte
    cdef int shift = 0
    while True:
        if r.pos >= r.end:
            raise ValueError("truncated varint")
        byte = r.buf[r.pos]
        r.pos += 1
        if shift == 63 and byte > 1:  # the tenth byte holds the 64th bit only
            raise ValueError("varint beyond 64 bits")
        acc |= (byte & 0x7F) << shift
        if not (byte & 0x80):
            break
        shift += 7
    return <long long>((acc >> 1) ^ (0 - (acc & 1)))


cdef double read_double(Reader* r) except? -1.0:
    """Avro double: 8 bytes, little-endian whatever the host's order."""
    cdef unsigned long long bits = 0
    cdef double value
    cdef int k
    if r.end - r.pos < 8:
        raise ValueError("truncated double")
    for k in range(8):
        bits |= (<unsigned long long>r.buf[r.pos + k]) << (8 * k)
    r.pos += 8
    memcpy(&value, &bits, 8)
    return value


cdef str read_string(Reader* r):
    """Avro string: a length, then that many bytes of strict UTF-8."""
    cdef long long size = read_long(r)
    if size < 0 or size > r.end - r.pos:
        raise ValueError("string length out of bounds")
    text = PyUnicode_DecodeUTF8(<const char*>(r.buf + r.pos), size, NULL)
    r.pos += size
    return text


cdef object read_optional_string(Reader* r):
    """The union ["null", "string"]."""
    cdef long long branch = read_long(r)
    if branch == 0:
        return None
    if branch == 1:
        return read_string(r)
    raise ValueError("union branch out of range")


cdef tuple read_event(Reader* r):
    # In the schema's field order; request_rows.FIELDS names them.
    event_id = read_string(r)
    service = read_string(r)
    operation = read_string(r)
    status_code = read_long(r)
    latency_ms = read_double(r)
    timestamp = read_long(r)
    version = read_optional_string(r)
    region = read_optional_string(r)
    callee = read_optional_string(r)
    return (event_id, service, operation, status_code, latency_ms, timestamp, version, region,
            callee)


cdef Reader reader_of(bytes data, Py_ssize_t start) except *:
    cdef Reader r
    r.buf = <const unsigned char*>PyBytes_AS_STRING(data)
    r.end = PyBytes_GET_SIZE(data)
    if start < 0 or start > r.end:
        raise ValueError("start out of bounds")
    r.pos = start
    return r


def event_row(bytes data, Py_ssize_t start):
    """The row of the RequestEvent body at ``data[start:]``, which it must fill exactly."""
    cdef Reader r = reader_of(data, start)
    row = read_event(&r)
    if r.pos != r.end:
        raise ValueError("bytes after the record")
    return row


def batch_rows(bytes data, Py_ssize_t start):
    """The rows of the RequestBatch body at ``data[start:]``, which it must fill exactly."""
    cdef Reader r = reader_of(data, start)
    cdef list rows = []
    cdef long long count
    while True:  # array blocks; a negative count is followed by the block's byte size
        count = read_long(&r)
        if count == 0:
            break
        # Every event takes more than one byte (checked before negating: no overflow).
        if count > r.end - r.pos or count < -(r.end - r.pos):
            raise ValueError("block count beyond the message")
        if count < 0:
            count = -count
            read_long(&r)
        while count > 0:
            rows.append(read_event(&r))
            count -= 1
    read_optional_string(&r)  # sdk: not used by the pipeline, but read to check the tail
    if r.pos != r.end:
        raise ValueError("bytes after the record")
    return rows
