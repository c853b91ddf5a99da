using System.Buffers.Binary;
using System.Diagnostics;
using Cowfish.Devices;
using Cowfish.Files;
using Cowfish.Tests.Support;
using Cowfish.Transactions;
using Xunit;
using Xunit.Abstractions;

namespace Cowfish.Tests;

/// <summary>
/// Threads read, write, clone and snapshot the same files at once. Every block a writer writes is
/// self-describing (writer, sequence, block, and a checksum), so a reader can tell a torn block at
/// a glance; every acknowledged write must survive; clones must be point-in-time copies.
/// </summary>
public sealed class FileConcurrencyTests(ITestOutputHelper output)
{
    private const int Block = 4096;

    /// <summary>A block stamped with (writer, sequence, block index), filled from those, with a trailing checksum.</summary>
    private static void Stamp(Span<byte> block, int writer, long seq, long index)
    {
        BinaryPrimitives.WriteInt32LittleEndian(block, writer);
        BinaryPrimitives.WriteInt64LittleEndian(block[4..], seq);
        BinaryPrimitives.WriteInt64LittleEndian(block[12..], index);
        var rng = new Random(HashCode.Combine(writer, seq, index));
        rng.NextBytes(block[20..^4]);
        BinaryPrimitives.WriteUInt32LittleEndian(block[^4..], Cowfish.Format.Crc32C.Compute(block[..^4]));
    }

    /// <summary>(writer, sequence) of a well-formed block, (-1, 0) for an all-zero one; throws on a torn block.</summary>
    private static (int Writer, long Seq) Parse(ReadOnlySpan<byte> block, long index, string where)
    {
        if (block.IndexOfAnyExcept((byte)0) < 0) return (-1, 0);
        uint crc = BinaryPrimitives.ReadUInt32LittleEndian(block[^4..]);
        if (crc != Cowfish.Format.Crc32C.Compute(block[..^4])) throw new Exception($"{where}: block {index} is torn or corrupt");
        long at = BinaryPrimitives.ReadInt64LittleEndian(block[12..]);
        if (at != index) throw new Exception($"{where}: block {index} holds block {at}'s data");
        return (BinaryPrimitives.ReadInt32LittleEndian(block), BinaryPrimitives.ReadInt64LittleEndian(block[4..]));
    }

    [Fact]
    public async Task ReadersWritersClonersAndSnapshotsRunTogether()
    {
        const int writers = 3, blocksPerWriter = 48, shared = 16, rmwBlocks = 8;
        int sharedStart = writers * blocksPerWriter, rmwStart = sharedStart + shared;
        using var fs = new FileSystem(Pool.Create(new MemoryDevice(), new PoolOptions { DropBudgetPerCommit = 64 }), ownsPool: true) { CloneSliceRecords = 8 };
        fs.CreateVolume("v");
        fs.CreateFile("v/img");
        fs.Truncate("v/img", (long)(rmwStart + rmwBlocks) * Block);
        // acked[b]: sequence of the last acknowledged write of a writer-owned block; issued[b]: the last one started.
        var acked = new long[sharedStart];
        var issued = new long[sharedStart];
        var halves = new long[2, rmwBlocks]; // last acknowledged sequence of each half of the RMW blocks
        var stop = new CancellationTokenSource();
        var errors = new List<string>();
        void Fail(string e) { lock (errors) errors.Add(e); stop.Cancel(); }

        var tasks = new List<Task>();
        for (int w = 0; w < writers; w++)
        {
            int id = w;
            tasks.Add(Task.Factory.StartNew(() =>
            {
                var rng = new Random(id);
                var block = new byte[Block];
                long seq = 0;
                try
                {
                    while (!stop.IsCancellationRequested)
                    {
                        seq++;
                        long b = rng.Next(3) == 0 ? sharedStart + rng.Next(shared) : id * blocksPerWriter + rng.Next(blocksPerWriter);
                        Stamp(block, id, seq, b);
                        if (b < sharedStart) Volatile.Write(ref issued[b], seq);
                        fs.Write("v/img", b * Block, block);
                        if (b < sharedStart) Volatile.Write(ref acked[b], seq);
                        if (id < 2)
                        {
                            // Two writers share the RMW blocks, each writing its own half: no update may be lost.
                            int r = rng.Next(rmwBlocks);
                            var half = new byte[Block / 2];
                            BinaryPrimitives.WriteInt64LittleEndian(half, seq);
                            BinaryPrimitives.WriteInt64LittleEndian(half.AsSpan(half.Length - 8), seq);
                            fs.Write("v/img", (long)(rmwStart + r) * Block + id * (Block / 2), half);
                            lock (halves) halves[id, r] = seq;
                        }
                    }
                }
                catch (Exception e) { Fail($"writer {id}: {e}"); }
            }, TaskCreationOptions.LongRunning));
        }
        tasks.Add(Task.Factory.StartNew(() =>
        {
            var rng = new Random(9);
            var buf = new byte[Block];
            try
            {
                while (!stop.IsCancellationRequested)
                {
                    long b = rng.Next(rmwStart);
                    fs.Read("v/img", b * Block, buf);
                    Parse(buf, b, "reader");
                }
            }
            catch (Exception e) { Fail($"reader: {e}"); }
        }, TaskCreationOptions.LongRunning));

        // The cloner: whole-file clones, range clones and snapshots, each checked as a point-in-time copy.
        int clones = 0;
        var sw = Stopwatch.StartNew();
        try
        {
            var rng = new Random(5);
            while (sw.Elapsed < TimeSpan.FromSeconds(6) && errors.Count == 0)
            {
                var before = acked.Select(x => Volatile.Read(ref x)).ToArray();
                string name;
                int kind = clones % 3;
                if (kind == 0) { name = $"v/c{clones}"; fs.Clone("v/img", name); }
                else if (kind == 1) { name = $"v/r{clones}"; fs.CreateFile(name); fs.CloneRange("v/img", 0, 0, name, 0); }
                else { fs.Snapshot("v", $"s{clones}", readOnly: true); name = $"s{clones}/img"; }
                var after = issued.Select(x => Volatile.Read(ref x)).ToArray();
                var copy = fs.ReadAll(name);
                for (int b = 0; b < sharedStart; b++)
                {
                    var (writer, seq) = Parse(copy.AsSpan(b * Block, Block), b, name);
                    if (writer >= 0 && writer != b / blocksPerWriter) throw new Exception($"{name}: block {b} written by writer {writer}");
                    if (seq < before[b] || seq > after[b])
                        throw new Exception($"{name}: block {b} has sequence {seq}, outside [{before[b]}, {after[b]}]: not a point-in-time copy");
                }
                for (int b = sharedStart; b < rmwStart; b++) Parse(copy.AsSpan(b * Block, Block), b, name);
                clones++;
                if (clones % 4 == 0)
                {
                    // Let old copies go while everything runs; their space comes back in the background.
                    if (fs.Exists($"v/c{clones - 4}")) fs.Remove($"v/c{clones - 4}");
                    if (fs.ListVolumes().Any(v => v.Name == $"s{clones - 2}")) fs.DeleteVolume($"s{clones - 2}");
                }
            }
        }
        catch (Exception e) { Fail($"cloner: {e}"); }
        stop.Cancel();
        await Task.WhenAll(tasks);
        Assert.Empty(errors);
        output.WriteLine($"{clones} clones and snapshots checked");
        Assert.True(clones >= 6, $"only {clones} clones in the time given");

        // Every acknowledged write is there, and no half-block update was lost.
        var final = fs.ReadAll("v/img");
        for (int b = 0; b < sharedStart; b++)
        {
            var (_, seq) = Parse(final.AsSpan(b * Block, Block), b, "final");
            Assert.Equal(acked[b], seq);
        }
        for (int r = 0; r < rmwBlocks; r++)
            for (int h = 0; h < 2; h++)
            {
                var half = final.AsSpan((rmwStart + r) * Block + h * (Block / 2), Block / 2);
                Assert.Equal(halves[h, r], BinaryPrimitives.ReadInt64LittleEndian(half));
                Assert.Equal(halves[h, r], BinaryPrimitives.ReadInt64LittleEndian(half[^8..]));
            }
        fs.Reclaim();
        TreeModel.AssertClean(fs.Pool, "after the concurrent run");
    }
}

public sealed class GroupMappingTests
{
    /// <summary>A device whose writes take a while, so that writers queue behind a mapping transaction.</summary>
    private sealed class SlowWriteDevice : IBlockDevice
    {
        private readonly MemoryDevice _inner = new();
        public long Length => _inner.Length;
        public void Read(long offset, Span<byte> buffer) => _inner.Read(offset, buffer);
        public void Write(long offset, ReadOnlySpan<byte> buffer) { Thread.Sleep(1); _inner.Write(offset, buffer); }
        public void Flush() { }
        public void SetLength(long length) => _inner.SetLength(length);
        public void Dispose() { }
    }

    [Fact]
    public void ConcurrentWritesShareMappingTransactionsAndAllLand()
    {
        using var fs = new FileSystem(Pool.Create(new SlowWriteDevice()), ownsPool: true);
        fs.CreateVolume("v");
        fs.CreateFile("v/a");
        fs.CreateFile("v/b");
        const int threads = 8, each = 25;
        ulong before = fs.Pool.CommittedGeneration.Value;
        var workers = Enumerable.Range(0, threads).Select(t => new Thread(() =>
        {
            var block = new byte[4096];
            for (int i = 0; i < each; i++)
            {
                BinaryPrimitives.WriteInt32LittleEndian(block, t);
                BinaryPrimitives.WriteInt32LittleEndian(block.AsSpan(4), i);
                fs.Write(t % 2 == 0 ? "v/a" : "v/b", ((long)t * each + i) * 4096, block);
            }
        })).ToList();
        workers.ForEach(w => w.Start());
        workers.ForEach(w => w.Join());
        ulong commits = fs.Pool.CommittedGeneration.Value - before;
        Assert.True(commits < threads * each * 3 / 4, $"{commits} commits for {threads * each} writes: no batching");
        var a = fs.ReadAll("v/a");
        var b = fs.ReadAll("v/b");
        for (int t = 0; t < threads; t++)
            for (int i = 0; i < each; i++)
            {
                var file = t % 2 == 0 ? a : b;
                long at = ((long)t * each + i) * 4096;
                Assert.Equal(t, BinaryPrimitives.ReadInt32LittleEndian(file.AsSpan((int)at)));
                Assert.Equal(i, BinaryPrimitives.ReadInt32LittleEndian(file.AsSpan((int)at + 4)));
            }
        TreeModel.AssertClean(fs.Pool, "after batched writes");
    }
}
