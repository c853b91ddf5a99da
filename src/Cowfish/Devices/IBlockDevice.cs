namespace Cowfish.Devices;

/// <summary>
/// Byte-addressed storage under a pool. Reads and writes may run concurrently from many threads.
/// Nothing written is durable until <see cref="Flush"/> returns.
/// </summary>
public interface IBlockDevice : IDisposable
{
    /// <summary>Current size in bytes.</summary>
    long Length { get; }

    /// <summary>Reads exactly <paramref name="buffer"/>.Length bytes; bytes past the end read as zero.</summary>
    void Read(long offset, Span<byte> buffer);

    /// <summary>Writes the buffer, growing the device when the write ends past its end.</summary>
    void Write(long offset, ReadOnlySpan<byte> buffer);

    /// <summary>
    /// Writes <paramref name="buffers"/> back to back from <paramref name="offset"/>, as one I/O
    /// where the device can (pwritev); by default one write each.
    /// </summary>
    void WriteGather(long offset, IReadOnlyList<ReadOnlyMemory<byte>> buffers)
    {
        foreach (var b in buffers)
        {
            Write(offset, b.Span);
            offset += b.Length;
        }
    }

    /// <summary>Makes every completed write durable (fdatasync).</summary>
    void Flush();

    /// <summary>Grows or shrinks the device.</summary>
    void SetLength(long length);
}
