namespace Cowfish.Devices;

/// <summary>A device held in memory, in 1 MiB chunks so that it can grow without copying.</summary>
public sealed class MemoryDevice : IBlockDevice
{
    private const int ChunkShift = 20;
    private const int ChunkSize = 1 << ChunkShift;

    // Guards chunks and length. Chunk contents are copied under the lock too, which keeps
    // concurrent readers from seeing a half-applied write of the same range.
    private readonly object _gate = new();
    private readonly List<byte[]?> _chunks = new();
    private long _length;

    public MemoryDevice(long length = 0) => SetLength(length);

    /// <summary>Builds a device holding a copy of <paramref name="image"/>.</summary>
    public static MemoryDevice FromImage(ReadOnlySpan<byte> image)
    {
        var d = new MemoryDevice();
        d.Write(0, image);
        return d;
    }

    public long Length { get { lock (_gate) return _length; } }

    public void Read(long offset, Span<byte> buffer)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        lock (_gate)
        {
            while (!buffer.IsEmpty)
            {
                int ci = (int)(offset >> ChunkShift);
                int co = (int)(offset & (ChunkSize - 1));
                int n = Math.Min(buffer.Length, ChunkSize - co);
                byte[]? chunk = ci < _chunks.Count ? _chunks[ci] : null;
                if (chunk is null || offset >= _length) buffer[..n].Clear();
                else chunk.AsSpan(co, n).CopyTo(buffer);
                long valid = _length - offset;
                if (valid < n) buffer[(int)Math.Max(0, valid)..n].Clear();
                buffer = buffer[n..];
                offset += n;
            }
        }
    }

    public void Write(long offset, ReadOnlySpan<byte> buffer)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        lock (_gate)
        {
            if (offset + buffer.Length > _length) SetLengthLocked(offset + buffer.Length);
            while (!buffer.IsEmpty)
            {
                int ci = (int)(offset >> ChunkShift);
                int co = (int)(offset & (ChunkSize - 1));
                int n = Math.Min(buffer.Length, ChunkSize - co);
                var chunk = _chunks[ci] ??= new byte[ChunkSize];
                buffer[..n].CopyTo(chunk.AsSpan(co, n));
                buffer = buffer[n..];
                offset += n;
            }
        }
    }

    public void Flush() { }

    public void SetLength(long length)
    {
        lock (_gate) SetLengthLocked(length);
    }

    private void SetLengthLocked(long length)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        int need = (int)((length + ChunkSize - 1) >> ChunkShift);
        while (_chunks.Count < need) _chunks.Add(null);
        if (length < _length)
        {
            // Zero the tail so that a later grow reads zeros, as a file does.
            for (int i = need; i < _chunks.Count; i++) _chunks[i] = null;
            _chunks.RemoveRange(need, _chunks.Count - need);
            int tail = (int)(length & (ChunkSize - 1));
            if (tail != 0 && _chunks[need - 1] is { } last) last.AsSpan(tail).Clear();
        }
        _length = length;
    }

    /// <summary>A copy of the whole device.</summary>
    public byte[] ToArray()
    {
        lock (_gate)
        {
            var copy = new byte[_length];
            Read(0, copy);
            return copy;
        }
    }

    public void Dispose() { }
}
