using Cowfish.Checking;
using Cowfish.Devices;
using Cowfish.Files;
using Cowfish.Tests.Support;
using Cowfish.Transactions;
using Xunit;
using Xunit.Abstractions;

namespace Cowfish.Tests;

/// <summary>
/// Power cuts at every flush of a workload of copy-on-write writes, clones, range clones,
/// snapshots, truncates and punches, each made durable before the next. After each cut the
/// pool must check clean and hold exactly the files of the last acknowledged operation, or of
/// the one in flight (whose outcome the caller never learned).
/// </summary>
public sealed class FileCrashTests(ITestOutputHelper output)
{
    private sealed record State(Dictionary<string, byte[]> Files, HashSet<string> Volumes)
    {
        public State Copy() => new(Files.ToDictionary(kv => kv.Key, kv => kv.Value.ToArray()), new(Volumes));
    }

    /// <summary>Runs the workload; returns the states after each acknowledged operation and the one in flight at a failure.</summary>
    private static (List<State> Acked, State? InFlight) Run(int seed, int ops, FaultInjectingDevice dev)
    {
        var acked = new List<State>();
        FileSystem fs;
        try { fs = new FileSystem(Pool.Create(dev, new PoolOptions { DropBudgetPerCommit = 16 }), ownsPool: true) { CloneSliceRecords = 2 }; }
        catch (CowfishException) { return (acked, null); }
        var rng = new Random(seed);
        var s = new State(new(), new());
        acked.Add(s.Copy());
        State? next = null;
        try
        {
            next = s.Copy();
            next.Volumes.Add("v");
            fs.CreateVolume("v");
            s = next; acked.Add(s.Copy());
            for (int i = 0; i < ops; i++)
            {
                next = s.Copy();
                var files = next.Files.Keys.Where(f => f.StartsWith("v/", StringComparison.Ordinal)).Order().ToList();
                int roll = rng.Next(100);
                if (files.Count == 0 || roll < 10)
                {
                    string f = $"v/f{rng.Next(4)}";
                    if (!next.Files.ContainsKey(f)) { next.Files[f] = []; fs.CreateFile(f); }
                }
                else if (roll < 50)
                {
                    string f = files[rng.Next(files.Count)];
                    long off = rng.Next(300_000);
                    var data = new byte[rng.Next(1, 70_000)];
                    rng.NextBytes(data);
                    var cur = next.Files[f];
                    if (off + data.Length > cur.Length) Array.Resize(ref cur, (int)off + data.Length);
                    data.CopyTo(cur, off);
                    next.Files[f] = cur;
                    fs.Write(f, off, data);
                    fs.Flush();
                }
                else if (roll < 60)
                {
                    string src = files[rng.Next(files.Count)], dst = $"v/f{rng.Next(4)}";
                    next.Files[dst] = next.Files[src].ToArray();
                    fs.Clone(src, dst);
                }
                else if (roll < 72)
                {
                    string src = files[rng.Next(files.Count)], dst = files[rng.Next(files.Count)];
                    int blocks = next.Files[src].Length / 4096;
                    if (blocks == 0 || src == dst) continue;
                    long so = rng.Next(blocks) * 4096L, len = rng.Next(1, blocks - (int)(so / 4096) + 1) * 4096L, dOff = rng.Next(80) * 4096L;
                    var cur = next.Files[dst];
                    if (dOff + len > cur.Length) Array.Resize(ref cur, (int)(dOff + len));
                    Array.Copy(next.Files[src], so, cur, dOff, len);
                    next.Files[dst] = cur;
                    fs.CloneRange(src, so, len, dst, dOff);
                }
                else if (roll < 80)
                {
                    string f = files[rng.Next(files.Count)];
                    int size = rng.Next(350_000);
                    var cur = next.Files[f];
                    Array.Resize(ref cur, size);
                    next.Files[f] = cur;
                    fs.Truncate(f, size);
                }
                else if (roll < 88)
                {
                    string f = files[rng.Next(files.Count)];
                    long off = rng.Next(300_000), len = rng.Next(1, 100_000);
                    var cur = next.Files[f];
                    if (off < cur.Length) Array.Clear(cur, (int)off, (int)Math.Min(len, cur.Length - off));
                    fs.PunchHole(f, off, len);
                }
                else if (roll < 94 && !next.Volumes.Contains("s"))
                {
                    next.Volumes.Add("s");
                    foreach (var f in files) next.Files["s" + f[1..]] = next.Files[f].ToArray();
                    fs.Snapshot("v", "s", readOnly: true);
                }
                else if (next.Volumes.Contains("s"))
                {
                    next.Volumes.Remove("s");
                    foreach (var f in next.Files.Keys.Where(k => k.StartsWith("s/", StringComparison.Ordinal)).ToList()) next.Files.Remove(f);
                    fs.DeleteVolume("s");
                    fs.Reclaim();
                }
                s = next;
                acked.Add(s.Copy());
            }
            return (acked, null);
        }
        catch (CowfishException) { return (acked, next); }
        finally { fs.Dispose(); }
    }

    public static IEnumerable<object[]> SeedCases() => Seeds.For(2).Select(s => new object[] { s });

    [Theory]
    [MemberData(nameof(SeedCases))]
    public void EveryFlushOfCopyOnWriteWritesAndClonesRecovers(int seed) => Check(seed, ops: 18);

    [Fact]
    [Trait("Category", "Stress")]
    public void EveryFlushOfCopyOnWriteWritesAndClonesRecoversLong()
    {
        foreach (int seed in Seeds.For(6)) Check(seed, ops: 60);
    }

    private void Check(int seed, int ops)
    {
        Seeds.Announce(output, nameof(EveryFlushOfCopyOnWriteWritesAndClonesRecovers), seed);
        var probe = new FaultInjectingDevice();
        var (all, failed) = Run(seed, ops, probe);
        Assert.Null(failed);
        long flushes = probe.FlushCount;
        output.WriteLine($"{flushes} flushes, {all.Count} acknowledged states");
        var rng = new Random(seed);
        for (long cut = 0; cut < flushes; cut++)
        {
            var dev = new FaultInjectingDevice();
            dev.CutAtFlush(cut);
            var (acked, inFlight) = Run(seed, ops, dev);
            foreach (var mode in Enum.GetValues<CrashMode>())
            {
                string ctx = $"seed {seed}, cut at flush {cut}, {mode}";
                var image = dev.CrashImage(mode, rng);
                Pool pool;
                try { pool = Pool.Open(MemoryDevice.FromImage(image)); }
                catch (CowfishException) when (acked.Count == 0) { continue; } // mkfs never finished
                using var fs = new FileSystem(pool, ownsPool: true);
                var report = PoolChecker.Check(pool);
                Assert.True(report.IsClean, $"{ctx}: check found faults:\n{string.Join("\n", report.Faults.Take(20))}");
                string? lastErr = Matches(fs, acked.Count > 0 ? acked[^1] : new State(new(), new()));
                if (lastErr is not null)
                {
                    string? flightErr = inFlight is null ? "no operation in flight" : Matches(fs, inFlight);
                    Assert.True(flightErr is null, $"{ctx}: matches neither the last acknowledged state ({lastErr}) nor the one in flight ({flightErr})");
                }
                // The recovered pool takes new work and stays clean.
                string vol = fs.ListVolumes().FirstOrDefault(v => !v.ReadOnly)?.Name ?? "fresh";
                if (vol == "fresh") fs.CreateVolume(vol);
                fs.CreateFile($"{vol}/after-crash");
                fs.Write($"{vol}/after-crash", 0, new byte[10_000], durable: true);
                TreeModel.AssertClean(pool, ctx + " after new work");
            }
        }
    }

    private static string? Matches(FileSystem fs, State s)
    {
        var vols = fs.ListVolumes().Select(v => v.Name).Order().ToList();
        if (!vols.SequenceEqual(s.Volumes.Order())) return $"volumes {string.Join(",", vols)} vs {string.Join(",", s.Volumes.Order())}";
        foreach (var vol in vols)
        {
            var names = fs.ListDirectory(vol).Select(e => $"{vol}/{e.Name}").Order().ToList();
            var want = s.Files.Keys.Where(k => k.StartsWith(vol + "/", StringComparison.Ordinal)).Order().ToList();
            if (!names.SequenceEqual(want)) return $"{vol} lists {string.Join(",", names)}, expected {string.Join(",", want)}";
        }
        foreach (var (f, content) in s.Files)
        {
            var got = fs.ReadAll(f);
            if (!got.AsSpan().SequenceEqual(content)) return $"{f} differs at byte {got.AsSpan().CommonPrefixLength(content)} ({got.Length} vs {content.Length} bytes)";
        }
        return null;
    }
}
