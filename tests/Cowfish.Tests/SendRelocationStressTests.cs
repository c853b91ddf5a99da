using System.Collections.Concurrent;
using System.IO.Pipes;
using Cowfish.Devices;
using Cowfish.Files;
using Cowfish.Relocation;
using Cowfish.Streams;
using Cowfish.Tests.Support;
using Cowfish.Transactions;
using Xunit;
using Xunit.Abstractions;

namespace Cowfish.Tests;

/// <summary>
/// The btrfs/252 analog. A random workload creates files and directories, writes, clones whole
/// files and ranges, renames, deletes, truncates, sets attributes and xattrs, and makes a
/// read-only snapshot every N operations. Meanwhile a relocation loop runs nonstop on both pools,
/// and every snapshot is sent (incrementally from the one before) through a pipe into a second
/// pool and through another into the same pool, older snapshots being deleted as it goes. At the
/// end every received snapshot has the digest its source had when it was sent (every file's
/// bytes, data ranges, stat and xattrs), both pools check clean, and not one send, receive or
/// relocation failed.
/// </summary>
public sealed class SendRelocationStressTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Limit = TimeSpan.FromMinutes(5);

    public static IEnumerable<object[]> SeedCases() => Seeds.For(1, 82475621).Select(s => new object[] { s });

    [Theory]
    [MemberData(nameof(SeedCases))]
    public void SnapshotsSentBothWaysWhileRelocationRunsNonstop(int seed) => Run(seed, operations: 800, every: 20);

    [Fact]
    [Trait("Category", "Stress")]
    public void SnapshotsSentBothWaysWhileRelocationRunsNonstopLong()
    {
        foreach (int seed in Seeds.For(2)) Run(seed, operations: 8000, every: 25);
    }

    private void Run(int seed, int operations, int every)
    {
        Seeds.Announce(output, nameof(SnapshotsSentBothWaysWhileRelocationRunsNonstop), seed);
        using var a = new FileSystem(Pool.Create(new MemoryDevice(), RelocationTests.Small), ownsPool: true);
        using var b = new FileSystem(Pool.Create(new MemoryDevice(), RelocationTests.Small), ownsPool: true);
        a.CreateVolume("v");
        var snapshots = new BlockingCollection<string>();
        var digests = new ConcurrentDictionary<string, string>(); // snapshot → its digest when sent
        var failures = new ConcurrentQueue<string>();
        using var done = new CancellationTokenSource();
        int relocations = 0, shrinks = 0, sent = 0;
        long moved = 0;

        Task Thread(string what, Action body) => Task.Factory.StartNew(() =>
        {
            try { body(); }
            catch (Exception e) { failures.Enqueue($"{what}: {e}"); done.Cancel(); snapshots.CompleteAdding(); }
        }, TaskCreationOptions.LongRunning);

        var workload = Thread("workload", () =>
        {
            var w = new NamespaceWorkload(a, new Random(seed));
            for (int op = 1; op <= operations && !done.IsCancellationRequested; op++)
            {
                w.Step();
                if (op % every != 0) continue;
                string snap = $"s{op / every}";
                a.Snapshot("v", snap, readOnly: true);
                snapshots.Add(snap);
            }
            snapshots.CompleteAdding();
        });

        var sender = Thread("send | receive", () =>
        {
            string? parent = null;
            foreach (var snap in snapshots.GetConsumingEnumerable())
            {
                digests[snap] = VolumeCompare.Digest(a, snap);
                // Into the second pool, which keeps every snapshot it receives.
                Pipe(a, snap, parent, b, snap);
                // Into the same pool: checked at once, then the previous copy goes.
                Pipe(a, snap, parent, a, "r" + snap);
                Assert.Equal(digests[snap], VolumeCompare.Digest(a, "r" + snap));
                if (parent is not null)
                {
                    a.DeleteVolume("r" + parent);
                    a.DeleteVolume(parent); // the older source snapshot
                }
                parent = snap;
                Interlocked.Increment(ref sent);
            }
        });

        var relocator = Thread("relocation", () =>
        {
            for (int i = 0; !done.IsCancellationRequested; i++)
            {
                var fs = i % 2 == 0 ? a : b;
                var r = PoolRelocator.Relocate(fs, PoolRelocator.CompactTarget(fs), new RelocationOptions { GrowTarget = true });
                Interlocked.Increment(ref relocations);
                if (r.BlocksAfter < r.BlocksBefore) Interlocked.Increment(ref shrinks);
                Interlocked.Add(ref moved, r.DataBlocksMoved + r.NodesRewritten);
                if (r.DataBlocksMoved + r.NodesRewritten == 0) System.Threading.Thread.Sleep(1);
            }
        });

        bool finished = Task.WaitAll([workload, sender], Limit);
        done.Cancel();
        Assert.True(finished, "the workload or the sender did not finish: deadlock?");
        Assert.True(relocator.Wait(Limit), "the relocation loop did not stop: deadlock?");
        output.WriteLine($"{sent} snapshots sent both ways; {relocations} relocations ({shrinks} shrank a pool), {moved} blocks moved (data and nodes); "
            + $"pools {a.Pool.Info().TotalBlocks} and {b.Pool.Info().TotalBlocks} blocks");
        Assert.True(failures.IsEmpty, string.Join("\n\n", failures));
        Assert.True(sent == operations / every, $"{sent} of {operations / every} snapshots sent");
        // Relocation must have finished shrinking passes while the sends ran. Whether a pass also
        // had to move blocks depends on where the workload's last frees left the tail: some runs
        // (seed 82475621, 1 in 3) shrink every time by cutting an already free tail.
        Assert.True(shrinks > 0, "relocation never shrank a pool");

        foreach (var (snap, digest) in digests)
            Assert.True(digest == VolumeCompare.Digest(b, snap), $"{snap} in the second pool differs from its source");
        string last = $"s{operations / every}";
        VolumeCompare.AssertSame(a, last, a, "r" + last, "the last snapshot received into its own pool");
        TreeModel.AssertClean(a.Pool, "the sending pool");
        TreeModel.AssertClean(b.Pool, "the receiving pool");
    }

    /// <summary>send | receive through an anonymous pipe, each on a thread of its own.</summary>
    internal static void Pipe(FileSystem from, string snap, string? parent, FileSystem to, string name)
    {
        using var server = new AnonymousPipeServerStream(PipeDirection.Out);
        using var client = new AnonymousPipeClientStream(PipeDirection.In, server.ClientSafePipeHandle);
        var send = Task.Factory.StartNew(() =>
        {
            try { SendStream.Write(from, snap, parent, server); }
            finally { server.Dispose(); }
        }, TaskCreationOptions.LongRunning);
        var receive = Task.Factory.StartNew(() => ReceiveStream.Apply(to, client, new ReceiveOptions { Name = name, BatchRecords = 8, BatchBytes = 1 << 20 }), TaskCreationOptions.LongRunning);
        if (!Task.WaitAll([send, receive], Limit)) throw new TimeoutException("send | receive did not finish: deadlock?");
    }

    /// <summary>Random namespace and data operations on volume "v", from one random stream.</summary>
    private sealed class NamespaceWorkload(FileSystem fs, Random rng)
    {
        private readonly List<string> _files = new();
        private readonly List<string> _dirs = new() { "v" };
        private int _next;

        public void Step()
        {
            int roll = rng.Next(100);
            if (_files.Count < 3 || roll < 12) { Create(); return; }
            string f = _files[rng.Next(_files.Count)];
            switch (roll)
            {
                case < 45:
                {
                    var data = new byte[rng.Next(1, 64 << 10)];
                    rng.NextBytes(data);
                    fs.Write(f, rng.Next(0, 512 << 10), data);
                    break;
                }
                case < 52:
                {
                    string c = NewName();
                    fs.Clone(f, c);
                    _files.Add(c);
                    break;
                }
                case < 60:
                {
                    string g = _files[rng.Next(_files.Count)];
                    long size = (long)fs.Stat(f).Size;
                    if (size < 8192 || g == f) break;
                    long len = rng.Next(1, (int)Math.Min(size / 4096, 32)) * 4096L;
                    fs.CloneRange(f, 0, len, g, rng.Next(0, 64) * 4096L);
                    break;
                }
                case < 68:
                {
                    string to = NewName();
                    fs.Rename(f, to);
                    _files[_files.IndexOf(f)] = to;
                    break;
                }
                case < 76:
                    fs.Remove(f);
                    _files.Remove(f);
                    break;
                case < 82:
                    fs.Truncate(f, rng.Next(0, 600 << 10));
                    break;
                case < 88:
                {
                    var value = new byte[rng.Next(0, 40)];
                    rng.NextBytes(value);
                    fs.SetXattr(f, $"user.k{rng.Next(4)}", value);
                    break;
                }
                case < 92:
                    fs.SetAttributes(f, mode: (uint)(0x100 | rng.Next(0x200)));
                    break;
                case < 96:
                    fs.CreateSymlink(NewName(), "../" + Path.GetFileName(f));
                    break;
                default:
                {
                    string d = $"{_dirs[rng.Next(_dirs.Count)]}/d{_next++}";
                    fs.CreateDirectory(d);
                    _dirs.Add(d);
                    break;
                }
            }
        }

        private void Create()
        {
            string f = NewName();
            fs.CreateFile(f);
            var data = new byte[rng.Next(0, 256 << 10)];
            rng.NextBytes(data);
            fs.Write(f, 0, data);
            _files.Add(f);
        }

        private string NewName() => $"{_dirs[rng.Next(_dirs.Count)]}/f{_next++}";
    }
}
