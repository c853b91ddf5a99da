using Cowfish.Checking;
using Cowfish.Devices;
using Cowfish.Files;
using Cowfish.Transactions;
using Xunit;

namespace Cowfish.Tests.Support;

/// <summary>
/// Harnesses for operations that walk the whole pool in slices (defrag, compaction): other work
/// alongside, kept in a model, and power cuts at sampled flushes.
/// </summary>
internal sealed class Alongside
{
    private readonly FileSystem _fs;
    private readonly Dictionary<string, byte[]> _model;
    private readonly string[] _written;
    private readonly Random _rng;
    private readonly object _gate = new();
    private int _slices;

    /// <param name="written">The files the writer thread overwrites, and range clones copy from.</param>
    public Alongside(FileSystem fs, Dictionary<string, byte[]> model, string[] written, int seed)
    {
        _fs = fs;
        _model = model;
        _written = written;
        _rng = new Random(seed);
    }

    /// <summary>Slices seen by <see cref="BetweenSlices"/>.</summary>
    public int Slices => _slices;

    /// <summary>
    /// Runs <paramref name="operation"/> while a writer thread overwrites random 4 KiB blocks of
    /// the written files, recording each in the model. Returns the writes done.
    /// </summary>
    public long WhileWriting(Action operation, int seed)
    {
        bool stop = false;
        long writes = 0;
        var writer = new Thread(() =>
        {
            var wr = new Random(seed);
            var block = new byte[4096];
            while (!Volatile.Read(ref stop))
            {
                string p = _written[wr.Next(_written.Length)];
                int at = wr.Next(_model[p].Length / 4096) * 4096;
                wr.NextBytes(block);
                lock (_gate)
                {
                    _fs.Write(p, at, block);
                    block.CopyTo(_model[p], at);
                }
                writes++;
            }
        });
        writer.Start();
        try { operation(); }
        finally
        {
            Volatile.Write(ref stop, true);
            writer.Join();
        }
        return writes;
    }

    /// <summary>
    /// For an AfterSlice hook: every <paramref name="every"/> slices, a read-only snapshot of
    /// volume v (every third time) or a range clone of 128 KiB of a written file into a new file,
    /// with the writer held off so that the model records exactly what they took.
    /// </summary>
    public void BetweenSlices(int every)
    {
        if (++_slices % every != 0) return;
        lock (_gate)
        {
            if (_slices % (3 * every) == 0)
            {
                string s = $"t{_slices}";
                _fs.Snapshot("v", s, readOnly: true);
                foreach (var p in _model.Keys.Where(k => k.StartsWith("v/")).ToList()) _model[s + p[1..]] = _model[p].ToArray();
            }
            else
            {
                string src = _written[_rng.Next(_written.Length)], e = $"v/e{_slices}";
                _fs.CreateFile(e);
                _fs.CloneRange(src, 65536, 131072, e, 0);
                _model[e] = _model[src].AsSpan(65536, 131072).ToArray();
            }
        }
    }

    /// <summary>
    /// Runs <paramref name="operation"/> on a pool opened from <paramref name="image"/> once to
    /// count its flushes, then again with a power cut at about <paramref name="cuts"/> of them:
    /// each crash image must reopen clean with <paramref name="model"/>'s bytes, and then
    /// <paramref name="again"/> runs on it (it ends with its own checks).
    /// </summary>
    public static long PowerCuts(byte[] image, PoolOptions options, Dictionary<string, byte[]> model, int seed, int cuts,
        Action<FileSystem> operation, Action<FileSystem, string> again)
    {
        var probe = new FaultInjectingDevice(image);
        using (var fs = new FileSystem(Pool.Open(probe, options), ownsPool: true)) operation(fs);
        long flushes = probe.FlushCount;
        long step = Math.Max(1, flushes / cuts);
        var rng = new Random(seed);
        for (long cut = rng.Next((int)step); cut < flushes; cut += step)
        {
            var dev = new FaultInjectingDevice(image);
            dev.CutAtFlush(cut);
            try
            {
                using var fs = new FileSystem(Pool.Open(dev, options), ownsPool: true);
                operation(fs);
            }
            catch (CowfishException) { }
            Assert.True(dev.IsDead, $"cut at flush {cut} never happened");
            string ctx = $"seed {seed}, cut at flush {cut} of {flushes}";
            using var crashed = new FileSystem(Pool.Open(MemoryDevice.FromImage(dev.CrashImage(CrashMode.RandomSubset, rng)), options), ownsPool: true);
            var report = PoolChecker.Check(crashed.Pool);
            Assert.True(report.IsClean, $"{ctx}: check found faults:\n{string.Join("\n", report.Faults.Take(20))}");
            RelocationTests.AssertContents(crashed, model, ctx);
            again(crashed, ctx);
        }
        return flushes;
    }
}
