using Cowfish.Devices;

namespace Cowfish.Tests.Support;

/// <summary>Counts the reads that reach a device (tests of how much an operation reads).</summary>
internal sealed class CountingDevice(IBlockDevice inner) : IBlockDevice
{
    public long Reads, BytesRead;
    public long Length => inner.Length;
    public void Read(long offset, Span<byte> buffer) { Interlocked.Increment(ref Reads); Interlocked.Add(ref BytesRead, buffer.Length); inner.Read(offset, buffer); }
    public void Write(long offset, ReadOnlySpan<byte> buffer) => inner.Write(offset, buffer);
    public void Flush() => inner.Flush();
    public void SetLength(long length) => inner.SetLength(length);
    public void Dispose() => inner.Dispose();
}
