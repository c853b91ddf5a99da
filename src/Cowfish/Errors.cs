namespace Cowfish;

/// <summary>Base of every error the engine raises on purpose.</summary>
public abstract class CowfishException : Exception
{
    protected CowfishException(string message, Exception? inner = null) : base(message, inner) { }
}

/// <summary>Something read from the pool failed validation: a checksum, a magic number, a bound.</summary>
public sealed class CorruptionException : CowfishException
{
    public CorruptionException(ulong address, string what, string expected, string actual)
        : base($"corruption at block {address}: {what}: expected {expected}, found {actual}")
    {
        Address = address;
        What = what;
        Expected = expected;
        Actual = actual;
    }

    /// <summary>Block address where the fault was found.</summary>
    public ulong Address { get; }
    public string What { get; }
    public string Expected { get; }
    public string Actual { get; }
}

/// <summary>The file is not a Cowfish pool at all.</summary>
public sealed class NotAPoolException : CowfishException
{
    public NotAPoolException(string message) : base(message) { }
}

/// <summary>The pool was written by a format version this build does not understand.</summary>
public sealed class FormatVersionException : CowfishException
{
    public FormatVersionException(uint found, uint supported)
        : base($"pool format version {found} is not supported (this build reads version {supported})")
    {
        Found = found;
        Supported = supported;
    }

    public uint Found { get; }
    public uint Supported { get; }
}

/// <summary>A read, write or flush of the underlying device failed.</summary>
public sealed class DeviceIOException : CowfishException
{
    public DeviceIOException(string message, Exception? inner = null) : base(message, inner) { }
}

/// <summary>
/// An earlier write or flush failed, so the in-memory state may be ahead of the disk.
/// The engine refuses all further work until the pool is reopened.
/// </summary>
public sealed class EngineFailedException : CowfishException
{
    public EngineFailedException(Exception cause)
        : base($"the pool is unusable because a previous I/O failed ({cause.Message}); reopen it", cause) { }
}

/// <summary>A caller asked for something impossible: an oversized key, a missing tree, a closed transaction.</summary>
public sealed class InvalidRequestException : CowfishException
{
    public InvalidRequestException(string message) : base(message) { }
}

/// <summary>A named thing inside the pool (a tree, a key) does not exist.</summary>
public sealed class NotFoundException : CowfishException
{
    public NotFoundException(string message) : base(message) { }
}

/// <summary>The pool is held open by another process.</summary>
public sealed class PoolBusyException : CowfishException
{
    public PoolBusyException(string path, Exception? inner = null)
        : base($"pool {path} is in use (another open handle holds its lock)", inner) { }
}

/// <summary>
/// A send stream failed validation: bad magic or version, a length out of bounds, an unknown record
/// type, a checksum mismatch, a record out of order, truncation, or a command that does not fit the
/// volume it is applied to. <see cref="Offset"/> is the byte offset in the stream where the bad
/// record (or the missing bytes) starts.
/// </summary>
public sealed class InvalidStreamException : CowfishException
{
    public InvalidStreamException(long offset, string message)
        : base($"invalid send stream at offset {offset}: {message}")
    {
        Offset = offset;
        Reason = message;
    }

    /// <summary>Byte offset in the stream of the record (or the end of input) that failed.</summary>
    public long Offset { get; }
    public string Reason { get; }
}
