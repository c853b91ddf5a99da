using System.Buffers.Binary;
using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using Cowfish.Devices;
using Microsoft.Win32.SafeHandles;

namespace Cowfish.Bench;

/// <summary>Settings shared by every benchmark of one run.</summary>
internal sealed class BenchContext
{
    public required bool Quick { get; init; }
    public required string Dir { get; init; }
    public required int CloneMaxExponent { get; init; }
    public required TextWriter Log { get; init; }

    /// <summary>The headline figures of the run, printed together at the end.</summary>
    public Table KeyFigures { get; } = new("benchmark", "figure", "value", "ratio", "target / ideal");

    public void Key(string bench, string figure, string value, string ratio, string target) =>
        KeyFigures.Add(bench, figure, value, ratio, target);

    public string TempPath(string name) => Path.Combine(Dir, name);

    public void Progress(string message) =>
        Log.WriteLine($"[{DateTime.Now:HH:mm:ss}] {message}");
}

/// <summary>Percentiles over samples (nearest rank).</summary>
internal static class Stats
{
    public static double Percentile(IReadOnlyList<double> samples, double p)
    {
        if (samples.Count == 0) return double.NaN;
        var sorted = samples.OrderBy(x => x).ToArray();
        int idx = (int)Math.Ceiling(p / 100.0 * sorted.Length) - 1;
        return sorted[Math.Clamp(idx, 0, sorted.Length - 1)];
    }

    public static double Median(IReadOnlyList<double> samples) => Percentile(samples, 50);

    public static double Max(IReadOnlyList<double> samples) => samples.Count == 0 ? double.NaN : samples.Max();
}

/// <summary>Formatting of figures for the markdown tables.</summary>
internal static class Fmt
{
    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    /// <summary>A duration given in seconds, in the most readable unit.</summary>
    public static string Time(double seconds)
    {
        if (double.IsNaN(seconds)) return "n/a";
        if (seconds < 1e-3) return (seconds * 1e6).ToString("0.0", Inv) + " µs";
        if (seconds < 1) return (seconds * 1e3).ToString("0.00", Inv) + " ms";
        return seconds.ToString("0.00", Inv) + " s";
    }

    public static string Rate(double perSecond, string unit = "/s")
    {
        if (double.IsNaN(perSecond)) return "n/a";
        if (perSecond >= 1e6) return (perSecond / 1e6).ToString("0.00", Inv) + " M" + unit;
        if (perSecond >= 1e3) return (perSecond / 1e3).ToString("0.0", Inv) + " K" + unit;
        return perSecond.ToString("0", Inv) + " " + unit.TrimStart();
    }

    public static string MBps(double bytesPerSecond) => (bytesPerSecond / 1e6).ToString("0.0", Inv) + " MB/s";

    public static string MB(double bytes) => (bytes / 1e6).ToString("0.0", Inv) + " MB";

    public static string Ratio(double r)
    {
        if (double.IsNaN(r) || double.IsInfinity(r)) return "n/a";
        if (r >= 100) return r.ToString("0", Inv) + "×";
        if (r >= 10) return r.ToString("0.0", Inv) + "×";
        if (r >= 0.01) return r.ToString("0.00", Inv) + "×";
        return r.ToString("0.0000", Inv) + "×";
    }

    public static string Num(double x, string format = "0.0") => x.ToString(format, Inv);

    public static string Count(long n) => n.ToString("N0", Inv);

    public static string Pow10(long n)
    {
        int e = (int)Math.Round(Math.Log10(n));
        return (long)Math.Pow(10, e) == n ? $"10^{e}" : Count(n);
    }
}

/// <summary>A markdown table.</summary>
internal sealed class Table(params string[] headers)
{
    private readonly List<string[]> _rows = new();

    public int Count => _rows.Count;

    public void Add(params string[] cells) => _rows.Add(cells);

    public override string ToString()
    {
        var sb = new StringBuilder();
        sb.Append("| ").Append(string.Join(" | ", headers)).AppendLine(" |");
        sb.Append('|').Append(string.Concat(headers.Select(_ => "---|"))).AppendLine();
        foreach (var r in _rows) sb.Append("| ").Append(string.Join(" | ", r)).AppendLine(" |");
        return sb.ToString();
    }
}

/// <summary>
/// Wraps the pool's device and counts what the engine asks of it, so that benchmarks can report
/// bytes written and flushes without touching the engine.
/// </summary>
internal sealed class CountingDevice(IBlockDevice inner) : IBlockDevice
{
    private long _bytesWritten, _writes, _flushes, _bytesRead, _reads, _flushTicks, _writeTicks, _spaceMapPageWrites;

    public long BytesWritten => Interlocked.Read(ref _bytesWritten);
    public long Writes => Interlocked.Read(ref _writes);
    public long Flushes => Interlocked.Read(ref _flushes);
    public long BytesRead => Interlocked.Read(ref _bytesRead);
    public long Reads => Interlocked.Read(ref _reads);

    /// <summary>Writes of space-map bitmap pages (blocks that start with the bitmap magic).</summary>
    public long SpaceMapPageWrites => Interlocked.Read(ref _spaceMapPageWrites);

    /// <summary>Seconds spent inside Flush (fdatasync), summed over threads.</summary>
    public double FlushSeconds => Interlocked.Read(ref _flushTicks) / (double)Stopwatch.Frequency;

    /// <summary>Seconds spent inside Write (pwrite), summed over threads.</summary>
    public double WriteSeconds => Interlocked.Read(ref _writeTicks) / (double)Stopwatch.Frequency;

    public long Length => inner.Length;

    public void Read(long offset, Span<byte> buffer)
    {
        Interlocked.Increment(ref _reads);
        Interlocked.Add(ref _bytesRead, buffer.Length);
        inner.Read(offset, buffer);
    }

    public void Write(long offset, ReadOnlySpan<byte> buffer)
    {
        Interlocked.Increment(ref _writes);
        Interlocked.Add(ref _bytesWritten, buffer.Length);
        if (buffer.Length >= 4 && BinaryPrimitives.ReadUInt32LittleEndian(buffer) == Cowfish.Format.Magic.Bitmap)
            Interlocked.Increment(ref _spaceMapPageWrites);
        long t0 = Stopwatch.GetTimestamp();
        inner.Write(offset, buffer);
        Interlocked.Add(ref _writeTicks, Stopwatch.GetTimestamp() - t0);
    }

    public void Flush()
    {
        Interlocked.Increment(ref _flushes);
        long t0 = Stopwatch.GetTimestamp();
        inner.Flush();
        Interlocked.Add(ref _flushTicks, Stopwatch.GetTimestamp() - t0);
    }

    public void SetLength(long length) => inner.SetLength(length);

    public void Dispose() => inner.Dispose();
}

/// <summary>Baselines measured straight on the disk, in the directory that holds the pools.</summary>
internal static class RawDisk
{
    [DllImport("libc", SetLastError = true)]
    private static extern int fdatasync(int fd);

    public static void DataSync(SafeFileHandle h)
    {
        bool added = false;
        h.DangerousAddRef(ref added);
        try
        {
            if (fdatasync((int)h.DangerousGetHandle()) != 0)
                throw new IOException($"fdatasync failed: errno {Marshal.GetLastPInvokeError()}");
        }
        finally
        {
            if (added) h.DangerousRelease();
        }
    }

    /// <summary>
    /// Sequential write bandwidth of a new file: <paramref name="bytes"/> in 1 MiB pwrites, then one
    /// fdatasync; the time includes the sync. Returns bytes per second.
    /// </summary>
    public static double SequentialWrite(string path, long bytes)
    {
        const int block = 1 << 20;
        var buf = new byte[block];
        new Random(7).NextBytes(buf);
        try
        {
            using var h = File.OpenHandle(path, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None);
            var sw = Stopwatch.StartNew();
            for (long off = 0; off < bytes; off += block) RandomAccess.Write(h, buf, off);
            DataSync(h);
            return bytes / sw.Elapsed.TotalSeconds;
        }
        finally
        {
            File.Delete(path);
        }
    }

    /// <summary>
    /// Latency of one 4 KiB pwrite followed by fdatasync, on a preallocated and synced file (so the
    /// sync carries no size change), over <paramref name="count"/> samples. Returns seconds.
    /// With <paramref name="pairBytes"/> above 0, each sample is shaped like a commit instead:
    /// pwrite <paramref name="pairBytes"/> + fdatasync, then pwrite 4 KiB at offset 0 + fdatasync.
    /// </summary>
    public static List<double> WriteSyncLatencies(string path, int count, int pairBytes = 0)
    {
        const int span = 256;
        int body = Math.Max(4096, (pairBytes + 4095) / 4096 * 4096);
        var buf = new byte[body];
        new Random(9).NextBytes(buf);
        var samples = new List<double>(count);
        try
        {
            using var h = File.OpenHandle(path, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None);
            for (int i = 0; i <= span; i++) RandomAccess.Write(h, buf, (long)i * body);
            DataSync(h);
            for (int i = 0; i < count; i++)
            {
                BinaryPrimitives.WriteInt32LittleEndian(buf, i);
                long t0 = Stopwatch.GetTimestamp();
                if (pairBytes > 0)
                {
                    RandomAccess.Write(h, buf, (1 + i % span) * (long)body);
                    DataSync(h);
                    RandomAccess.Write(h, buf.AsSpan(0, 4096), 0);
                    DataSync(h);
                }
                else
                {
                    RandomAccess.Write(h, buf.AsSpan(0, 4096), (i % span) * (long)body);
                    DataSync(h);
                }
                samples.Add(Stopwatch.GetElapsedTime(t0).TotalSeconds);
            }
            return samples;
        }
        finally
        {
            File.Delete(path);
        }
    }
}

internal static class Keys
{
    public static byte[] BigEndian(ulong v)
    {
        var k = new byte[8];
        BinaryPrimitives.WriteUInt64BigEndian(k, v);
        return k;
    }
}

/// <summary>Orders byte arrays the way the engine does: unsigned lexicographic.</summary>
internal sealed class ByteComparer : IComparer<byte[]>
{
    public static readonly ByteComparer Instance = new();

    public int Compare(byte[]? x, byte[]? y) => x.AsSpan().SequenceCompareTo(y);
}
