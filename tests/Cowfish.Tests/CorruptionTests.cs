using Cowfish.Checking;
using Cowfish.Devices;
using Cowfish.Format;
using Cowfish.Tests.Support;
using Cowfish.Transactions;
using Xunit;
using Xunit.Abstractions;

namespace Cowfish.Tests;

/// <summary>
/// Fuzz-style tests of the pool parser: flipped bytes in a committed pool, garbage and truncated
/// files. Opening, checking and reading must give a clear error naming the address, or work —
/// never crash with another exception, hang or loop.
/// </summary>
public sealed class CorruptionTests(ITestOutputHelper output)
{
    private static (byte[] Image, TreeModel Model) BuildPool(int seed)
    {
        var dev = new MemoryDevice();
        var model = new TreeModel();
        using (var pool = Pool.Create(dev))
        {
            var w = new Workload(seed, keySpace: 2000);
            for (int c = 0; c < 6; c++)
            {
                var working = model.Copy();
                using var tx = pool.BeginWrite();
                w.Step(tx, working, 400);
                tx.Commit();
                model = working;
            }
        }
        return (dev.ToArray(), model);
    }

    /// <summary>Does everything a user could do with a damaged pool; only engine errors may escape.</summary>
    private static string Exercise(byte[] image)
    {
        Pool pool;
        try { pool = Pool.Open(MemoryDevice.FromImage(image)); }
        catch (CowfishException e) { return "open: " + e.GetType().Name; }
        using (pool)
        {
            CheckReport report = PoolChecker.Check(pool);
            foreach (var f in report.Faults) Assert.False(string.IsNullOrWhiteSpace(f.Message));
            try
            {
                using var rt = pool.BeginRead();
                foreach (var t in rt.ListTrees())
                {
                    _ = rt.Scan(t).Count();
                    _ = rt.Scan(t, reverse: true).Count();
                }
                using var tx = pool.BeginWrite();
                var n = tx.CreateTree();
                tx.Put(n, [1], [2]);
                tx.Commit();
            }
            catch (CowfishException e) when (e is CorruptionException or EngineFailedException or InvalidRequestException)
            {
                Assert.False(report.IsClean && e is CorruptionException, "check was clean but reading found corruption: " + e.Message);
                return "read: " + e.GetType().Name;
            }
            return report.IsClean ? "clean" : $"faults: {report.Faults.Count}";
        }
    }

    public static IEnumerable<object[]> SeedCases() => Seeds.For(3).Select(s => new object[] { s });

    [Theory]
    [MemberData(nameof(SeedCases))]
    public async Task FlippedBytesNeverCrashOrHang(int seed)
    {
        Seeds.Announce(output, nameof(FlippedBytesNeverCrashOrHang), seed);
        var (image, _) = BuildPool(seed);
        var rng = new Random(seed);
        var outcomes = new Dictionary<string, int>();
        for (int i = 0; i < 300; i++)
        {
            var damaged = (byte[])image.Clone();
            int flips = 1 + rng.Next(4);
            for (int f = 0; f < flips; f++)
            {
                // Half the flips land in metadata-dense places: the superblocks and the first blocks.
                int at = rng.Next(2) == 0 ? rng.Next(Math.Min(image.Length, 64 * Layout.BlockSize)) : rng.Next(image.Length);
                damaged[at] ^= (byte)(1 << rng.Next(8));
            }
            var task = Task.Run(() => Exercise(damaged));
            var finished = await Task.WhenAny(task, Task.Delay(TimeSpan.FromSeconds(30)));
            Assert.True(finished == task, $"seed {seed} iteration {i}: hung");
            string outcome = await task;
            outcomes[outcome.Split(':')[0]] = outcomes.GetValueOrDefault(outcome.Split(':')[0]) + 1;
        }
        output.WriteLine(string.Join(", ", outcomes.Select(kv => $"{kv.Key}: {kv.Value}")));
        Assert.True(outcomes.GetValueOrDefault("faults") + outcomes.GetValueOrDefault("read") + outcomes.GetValueOrDefault("open") > 0, "no flip was ever detected");
    }

    [Fact]
    public void EveryFlipInAUsedBlockIsDetectedByCheck()
    {
        var (image, _) = BuildPool(5);
        using var pool = Pool.Open(MemoryDevice.FromImage(image));
        // The blocks the current state uses, from check's own accounting of a clean pool.
        Assert.True(PoolChecker.Check(pool).IsClean);
        var used = new List<ulong>();
        for (ulong b = Layout.FirstDataBlock; b < (ulong)image.Length / Layout.BlockSize; b++)
            if (pool.Space.IsAllocated(b)) used.Add(b);
        var rng = new Random(5);
        int detected = 0;
        foreach (ulong b in used.OrderBy(_ => rng.Next()).Take(60))
        {
            var damaged = (byte[])image.Clone();
            // Flip a byte inside the encoded part of the block (the header or the first entries).
            damaged[(long)b * Layout.BlockSize + rng.Next(64)] ^= 0x40;
            string outcome = Exercise(damaged);
            Assert.NotEqual("clean", outcome);
            detected++;
        }
        Assert.True(detected > 10);
    }

    [Fact]
    public void GarbageTruncatedAndEmptyFilesGiveClearErrors()
    {
        var rng = new Random(1);
        var garbage = new byte[64 * 1024];
        rng.NextBytes(garbage);
        Assert.Throws<NotAPoolException>(() => Pool.Open(MemoryDevice.FromImage(garbage)));
        Assert.Throws<NotAPoolException>(() => Pool.Open(MemoryDevice.FromImage(new byte[0])));
        Assert.Throws<NotAPoolException>(() => Pool.Open(MemoryDevice.FromImage(new byte[1 << 20])));

        var (image, _) = BuildPool(3);
        foreach (int len in new[] { 100, Layout.BlockSize, 3 * Layout.BlockSize, image.Length / 2, image.Length - 1 })
        {
            var e = Assert.ThrowsAny<CowfishException>(() => Exercise2(image.AsSpan(0, len).ToArray()));
            Assert.Matches("block|pool", e.Message);
        }

        static void Exercise2(byte[] img)
        {
            using var p = Pool.Open(MemoryDevice.FromImage(img));
            var r = PoolChecker.Check(p);
            if (!r.IsClean) throw new CheckFailedException(r);
            using var rt = p.BeginRead();
            foreach (var t in rt.ListTrees()) _ = rt.Scan(t).Count();
        }
    }

    [Fact]
    public void AnUnknownFormatVersionIsRefusedByName()
    {
        var (image, _) = BuildPool(4);
        for (int slot = 0; slot < 2; slot++)
        {
            var sb = image.AsSpan(slot * Layout.BlockSize);
            System.Buffers.Binary.BinaryPrimitives.WriteUInt32LittleEndian(sb[8..], 99);
        }
        var e = Assert.Throws<FormatVersionException>(() => Pool.Open(MemoryDevice.FromImage(image)));
        Assert.Equal(99u, e.Found);
        Assert.Contains("version 99", e.Message);
    }

    [Fact]
    public void ATornNewestSuperblockFallsBackToThePreviousCommit()
    {
        var dev = new MemoryDevice();
        TreeId t;
        using (var pool = Pool.Create(dev))
        {
            using (var tx = pool.BeginWrite()) { t = tx.CreateTree(); tx.Put(t, [1], [1]); tx.Commit(); }
            using (var tx = pool.BeginWrite()) { tx.Put(t, [1], [2]); tx.Commit(); }
        }
        var image = dev.ToArray();
        ulong g0 = BitConverter.ToUInt64(image, 32), g1 = BitConverter.ToUInt64(image, Layout.BlockSize + 32);
        int newest = g0 > g1 ? 0 : 1;
        image[newest * Layout.BlockSize + 40] ^= 1; // inside the checksummed area
        using var reopened = Pool.Open(MemoryDevice.FromImage(image));
        var report = PoolChecker.Check(reopened);
        Assert.True(report.IsClean, string.Join("\n", report.Faults));
        Assert.Contains(report.Notes, n => n.Contains($"slot {newest}"));
        using var rt = reopened.BeginRead();
        Assert.True(rt.TryGet(t, [1], out var v));
        Assert.Equal(new byte[] { 1 }, v);
    }
}

/// <summary>A lost write leaves an older, self-consistent block behind; pointers carry the generation they expect, so it is caught.</summary>
public sealed class LostWriteTests
{
    [Fact]
    public void AStaleButValidNodeIsReportedAsALostWrite()
    {
        var dev = new MemoryDevice();
        TreeId t;
        using (var pool = Pool.Create(dev))
        {
            using (var tx = pool.BeginWrite()) { t = tx.CreateTree(); tx.Commit(); }
            for (int round = 0; round < 6; round++)
            {
                using var tx = pool.BeginWrite();
                for (int i = 0; i < 3000; i += 3) tx.Put(t, BitConverter.GetBytes(i), BitConverter.GetBytes(round));
                tx.Commit();
            }
        }
        byte[] before = dev.ToArray();
        using (var pool = Pool.Open(dev))
        using (var tx = pool.BeginWrite())
        {
            for (int i = 0; i < 3000; i += 3) tx.Put(t, BitConverter.GetBytes(i), BitConverter.GetBytes(99));
            tx.Commit();
        }
        byte[] after = dev.ToArray();

        // Find a tree node the last commit wrote over an older valid node at the same address, and put the old one back.
        int restored = -1;
        for (int b = 2; b < Math.Min(before.Length, after.Length) / Layout.BlockSize; b++)
        {
            var o = before.AsSpan(b * Layout.BlockSize, Layout.BlockSize);
            var n = after.AsSpan(b * Layout.BlockSize, Layout.BlockSize);
            if (o.SequenceEqual(n) || BitConverter.ToUInt32(o) != Magic.Node || BitConverter.ToUInt32(n) != Magic.Node || o[24] != 4 || n[24] != 4) continue;
            try { Cowfish.Trees.Node.Decode(o, (ulong)b); } catch (CorruptionException) { continue; }
            o.CopyTo(n);
            restored = b;
            break;
        }
        Assert.True(restored > 0, "no reused node block found; the workload should reuse freed blocks");
        using var damaged = Pool.Open(MemoryDevice.FromImage(after));
        var report = PoolChecker.Check(damaged);
        Assert.Contains(report.Faults, f => f.Address == (ulong)restored && f.Message.Contains("lost or misdirected write"));
        using var rt = damaged.BeginRead();
        var e = Assert.Throws<CorruptionException>(() => rt.Scan(t).Count());
        Assert.Contains("generation", e.Message);
    }
}
