using Cowfish.Files;
using Cowfish.Format;
using Microsoft.Win32.SafeHandles;

namespace Cowfish.Cli;

/// <summary>
/// <c>import</c> and <c>export</c>: copies between host files and pool files that keep holes as holes.
/// Import into an existing pool file rewrites only the 4 KiB blocks whose bytes changed (like
/// rsync --inplace), so that snapshots and clones of it go on sharing everything else.
/// </summary>
internal static class TransferCommands
{
    private const int Chunk = 1 << 20;
    private const int Block = Layout.BlockSize;

    public static readonly Command[] All =
    [
        new("import", "import POOL HOST_FILE VOLUME/PATH",
            "Copy a host file in, keeping holes; into an existing file, rewrite only the 4 KiB blocks that differ.", Import),
        new("export", "export POOL VOLUME/PATH HOST_FILE", "Copy a file out to the host; holes stay holes.", Export),
    ];

    private static int Import(Args a, Io io)
    {
        a.Expect(3, "POOL HOST_FILE VOLUME/PATH");
        string host = io.HostPath(a.Positional[1]);
        if (Directory.Exists(host)) throw new InvalidRequestException($"{host} is a directory; import copies one file");
        if (!File.Exists(host)) throw new NotFoundException($"{host}: no such file");
        if (host == io.HostPath(a.Positional[0])) throw new UsageException($"{a.Positional[1]} is the pool itself");
        using var handle = File.OpenHandle(host, FileMode.Open, FileAccess.Read);
        using var fs = io.Pools.OpenFiles(a.Positional[0]);
        string target = PoolPaths.IntoDirectory(fs, a.Positional[2], Path.GetFileName(Path.GetFullPath(host)));
        bool created = PoolPaths.EnsureFile(fs, target);
        if (fs.Stat(target).Type != FileType.File) throw new InvalidRequestException($"{target}: not a regular file");
        long size = RandomAccess.GetLength(handle);
        var progress = new Progress(io, "import", size);
        var job = new ImportJob(fs, target, handle, created ? [] : fs.DataRanges(target));
        try
        {
            foreach (var (start, end) in Regions(SparseFile.DataRanges(handle, size), job.PoolData, size))
                for (long off = start; off < end; off += Chunk)
                {
                    int n = (int)Math.Min(Chunk, end - off);
                    job.Process(off, n);
                    progress.Report(off + n);
                }
            if ((long)fs.Stat(target).Size != size) fs.Truncate(target, size);
            fs.Flush();
        }
        catch (Exception e) when (created && e is CowfishException or IOException)
        {
            // A half-imported new file is worse than none; an existing one is left as far as it got.
            try { fs.Remove(target); }
            catch (CowfishException) { }
            throw;
        }
        finally { progress.Done(); }
        fs.Reclaim();
        long skipped = size - job.Written - job.Zeroed;
        io.Out.WriteLine($"imported {host} into {target}: {size} bytes; wrote {job.Written}, skipped {skipped} (holes or unchanged), zeroed {job.Zeroed}");
        return ExitCodes.Ok;
    }

    /// <summary>
    /// The parts of [0, size) to look at: the host's data and the pool file's data, widened to whole
    /// blocks and merged. Outside them both sides read as zeros, so there is nothing to write.
    /// </summary>
    private static List<(long Start, long End)> Regions(IEnumerable<(long Offset, long Length)> host, IEnumerable<(long Offset, long Length)> pool, long size)
    {
        var merged = new List<(long Start, long End)>();
        var all = host.Concat(pool)
            .Select(r => (Start: r.Offset / Block * Block, End: Math.Min(size, (r.Offset + r.Length + Block - 1) / Block * Block)))
            .Where(r => r.Start < r.End)
            .OrderBy(r => r.Start);
        foreach (var r in all)
        {
            if (merged.Count > 0 && r.Start <= merged[^1].End) merged[^1] = (merged[^1].Start, Math.Max(merged[^1].End, r.End));
            else merged.Add(r);
        }
        return merged;
    }

    /// <summary>One import: compares block by block and writes, or punches, only the runs that differ.</summary>
    private sealed class ImportJob(FileSystem fs, string target, SafeFileHandle handle, IReadOnlyList<(long Offset, long Length)> poolData)
    {
        private enum Change { Same, Data, Zero }

        private readonly byte[] _host = new byte[Chunk];
        private readonly byte[] _pool = new byte[Chunk];
        private int _poolIndex;

        public IReadOnlyList<(long Offset, long Length)> PoolData => poolData;
        public long Written { get; private set; }
        public long Zeroed { get; private set; }

        /// <summary>Handles [off, off + n); chunks come in increasing order and start on block boundaries.</summary>
        public void Process(long off, int n)
        {
            ReadHost(off, _host.AsSpan(0, n));
            _pool.AsSpan(0, n).Clear();
            if (PoolHasData(off, n)) fs.Read(target, off, _pool.AsSpan(0, n));
            var kind = Change.Same;
            int runStart = 0;
            for (int b = 0; b < n; b += Block)
            {
                int len = Math.Min(Block, n - b);
                var k = Classify(_host.AsSpan(b, len), _pool.AsSpan(b, len));
                if (k == kind) continue;
                Apply(kind, off, runStart, b);
                (kind, runStart) = (k, b);
            }
            Apply(kind, off, runStart, n);
        }

        private static Change Classify(ReadOnlySpan<byte> host, ReadOnlySpan<byte> pool) =>
            host.SequenceEqual(pool) ? Change.Same : host.ContainsAnyExcept((byte)0) ? Change.Data : Change.Zero;

        private void Apply(Change kind, long off, int from, int to)
        {
            if (to <= from) return;
            switch (kind)
            {
                case Change.Data:
                    fs.Write(target, off + from, _host.AsSpan(from, to - from), durable: false);
                    Written += to - from;
                    break;
                case Change.Zero:
                    // The pool has data where the host now has zeros: a hole, not written zeros.
                    fs.PunchHole(target, off + from, to - from);
                    Zeroed += to - from;
                    break;
            }
        }

        private bool PoolHasData(long off, int n)
        {
            while (_poolIndex < poolData.Count && poolData[_poolIndex].Offset + poolData[_poolIndex].Length <= off) _poolIndex++;
            return _poolIndex < poolData.Count && poolData[_poolIndex].Offset < off + n;
        }

        private void ReadHost(long off, Span<byte> buffer)
        {
            int done = 0;
            while (done < buffer.Length)
            {
                int r = RandomAccess.Read(handle, buffer[done..], off + done);
                if (r == 0) break;
                done += r;
            }
            buffer[done..].Clear();
        }
    }

    private static int Export(Args a, Io io)
    {
        a.Expect(3, "POOL VOLUME/PATH HOST_FILE");
        string pool = a.Positional[0], source = a.Positional[1], host = io.HostPath(a.Positional[2]);
        if (Directory.Exists(host)) host = Path.Combine(host, PoolPaths.Leaf(source));
        string full = Path.GetFullPath(host);
        if (Path.GetDirectoryName(full) is { } dir && !Directory.Exists(dir)) throw new NotFoundException($"{dir}: no such directory");
        if (full == io.HostPath(pool)) throw new UsageException($"{a.Positional[2]} is the pool itself");
        using var fs = io.Pools.OpenFiles(pool);
        var st = fs.Stat(source);
        if (st.Type != FileType.File) throw new InvalidRequestException($"{source}: not a regular file");
        var ranges = fs.DataRanges(source);
        long size = (long)st.Size, written = 0;
        var buf = new byte[Chunk];
        var progress = new Progress(io, "export", size);
        try
        {
            // Create and set the length first: the file is then one hole, and only data is written into it.
            using var handle = File.OpenHandle(full, FileMode.Create, FileAccess.Write);
            RandomAccess.SetLength(handle, size);
            foreach (var (start, length) in ranges)
                for (long off = start; off < start + length; off += Chunk)
                {
                    int n = fs.Read(source, off, buf.AsSpan(0, (int)Math.Min(Chunk, start + length - off)));
                    written += WriteNonZero(handle, buf.AsSpan(0, n), off);
                    progress.Report(off + n);
                }
        }
        finally { progress.Done(); }
        io.Out.WriteLine($"exported {source} to {host}: {size} bytes; wrote {written}, skipped {size - written} (holes)");
        return ExitCodes.Ok;
    }

    /// <summary>Writes the runs of blocks that are not all zeros (zero blocks stay holes); returns the bytes written.</summary>
    private static long WriteNonZero(SafeFileHandle handle, ReadOnlySpan<byte> data, long off)
    {
        long written = 0;
        int runStart = -1;
        for (int b = 0; b < data.Length; b += Block)
        {
            bool zero = !data.Slice(b, Math.Min(Block, data.Length - b)).ContainsAnyExcept((byte)0);
            if (!zero && runStart < 0) runStart = b;
            if (zero && runStart >= 0)
            {
                RandomAccess.Write(handle, data[runStart..b], off + runStart);
                written += b - runStart;
                runStart = -1;
            }
        }
        if (runStart >= 0)
        {
            RandomAccess.Write(handle, data[runStart..], off + runStart);
            written += data.Length - runStart;
        }
        return written;
    }
}
