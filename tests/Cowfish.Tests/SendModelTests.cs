using Cowfish.Files;
using Cowfish.Streams;
using Cowfish.Tests.Support;
using Xunit;
using Xunit.Abstractions;

namespace Cowfish.Tests;

/// <summary>
/// Random workloads (files, directories, writes, clones, range clones, renames, deletes, hard links,
/// symlinks, xattrs, attributes, truncates, punches, preallocation) with a read-only snapshot after
/// each step; each snapshot goes to a second pool as an incremental stream (now and then a full one)
/// and must arrive equal to the snapshot, which is the model.
/// </summary>
public sealed class SendModelTests(ITestOutputHelper output)
{
    public static IEnumerable<object[]> SeedCases() => Seeds.For(3).Select(s => new object[] { s });

    [Theory]
    [MemberData(nameof(SeedCases))]
    public void RandomWorkloadsArriveEqual(int seed) => Run(seed, steps: 12, opsPerStep: 25);

    [Fact]
    [Trait("Category", "Stress")]
    public void RandomWorkloadsArriveEqualLong()
    {
        foreach (int seed in Seeds.For(10)) Run(seed, steps: 40, opsPerStep: 60);
    }

    private int _next;

    private void Run(int seed, int steps, int opsPerStep)
    {
        Seeds.Announce(output, nameof(RandomWorkloadsArriveEqual), seed);
        var rng = new Random(seed);
        using var a = SendReceiveTests.NewFs();
        using var b = SendReceiveTests.NewFs();
        a.CreateVolume("v");
        var dirs = new List<string> { "v" };
        var files = new List<string>();
        var links = new List<string>();
        string? last = null;
        long streamBytes = 0;
        int refused = 0;
        for (int step = 0; step < steps; step++)
        {
            for (int op = 0; op < opsPerStep; op++)
            {
                try { Op(a, rng, dirs, files, links); }
                catch (InvalidRequestException) { refused++; } // e.g. a rename of a directory into itself: refused, nothing changed
            }
            string snap = $"s{step}";
            a.Snapshot("v", snap, readOnly: true);
            bool full = last is null || rng.Next(6) == 0;
            var stream = SendReceiveTests.Send(a, snap, full ? null : last);
            streamBytes += stream.Length;
            SendReceiveTests.Receive(b, stream);
            VolumeCompare.AssertSame(a, snap, b, snap, $"seed {seed}, step {step} ({(full ? "full" : "incremental")})");
            if (last is not null && rng.Next(3) == 0) { a.DeleteVolume(last); b.DeleteVolume(last); }
            last = snap;
        }
        output.WriteLine($"{steps} snapshots, {streamBytes} bytes of streams, {refused} operations refused");
        Assert.True(refused < steps * opsPerStep / 10, $"{refused} of {steps * opsPerStep} operations were refused: the workload tests little");
        TreeModel.AssertClean(a.Pool, $"seed {seed}: source");
        TreeModel.AssertClean(b.Pool, $"seed {seed}: target");
    }

    private void Op(FileSystem fs, Random rng, List<string> dirs, List<string> files, List<string> links)
    {
        string Dir() => dirs[rng.Next(dirs.Count)];
        string New() => $"{Dir()}/n{_next++}";
        int roll = rng.Next(100);
        if (files.Count == 0 || roll < 10)
        {
            string f = New();
            fs.CreateFile(f, (uint)rng.Next(0x1FF));
            files.Add(f);
        }
        else if (roll < 14 && dirs.Count < 12)
        {
            string d = New();
            fs.CreateDirectory(d);
            dirs.Add(d);
        }
        else if (roll < 40)
        {
            string f = files[rng.Next(files.Count)];
            long off = rng.Next(4) == 0 ? rng.Next(64) * 4096L : rng.Next(400_000);
            fs.Write(f, off, SendReceiveTests.Bytes(rng.Next(1, 90_000), rng.Next()));
        }
        else if (roll < 46)
        {
            string src = files[rng.Next(files.Count)];
            string dst = rng.Next(2) == 0 ? files[rng.Next(files.Count)] : New();
            if (src == dst) return;
            fs.Clone(src, dst);
            if (!files.Contains(dst)) files.Add(dst);
        }
        else if (roll < 52)
        {
            string src = files[rng.Next(files.Count)], dst = files[rng.Next(files.Count)];
            long size = (long)fs.Stat(src).Size;
            if (src == dst || size < 4096) return;
            long blocks = size / 4096;
            long so = rng.NextInt64(blocks) * 4096, len = rng.NextInt64(1, blocks - so / 4096 + 1) * 4096;
            fs.CloneRange(src, so, len, dst, rng.Next(100) * 4096L);
        }
        else if (roll < 57)
        {
            string f = files[rng.Next(files.Count)];
            fs.Truncate(f, rng.Next(500_000));
        }
        else if (roll < 61)
        {
            string f = files[rng.Next(files.Count)];
            fs.PunchHole(f, rng.Next(300_000), rng.Next(1, 100_000));
        }
        else if (roll < 63)
        {
            string f = files[rng.Next(files.Count)];
            fs.Preallocate(f, rng.Next(200_000), rng.Next(1, 60_000));
        }
        else if (roll < 70)
        {
            // Rename a file (sometimes over another) or a directory.
            if (rng.Next(4) == 0 && dirs.Count > 1)
            {
                string d = dirs[1 + rng.Next(dirs.Count - 1)];
                string to = New();
                fs.Rename(d, to);
                for (int i = 0; i < dirs.Count; i++) if (dirs[i] == d || dirs[i].StartsWith(d + "/", StringComparison.Ordinal)) dirs[i] = to + dirs[i][d.Length..];
                for (int i = 0; i < files.Count; i++) if (files[i].StartsWith(d + "/", StringComparison.Ordinal)) files[i] = to + files[i][d.Length..];
                for (int i = 0; i < links.Count; i++) if (links[i].StartsWith(d + "/", StringComparison.Ordinal)) links[i] = to + links[i][d.Length..];
                return;
            }
            string f = files[rng.Next(files.Count)];
            string dst = rng.Next(3) == 0 ? files[rng.Next(files.Count)] : New();
            if (f == dst) return;
            fs.Rename(f, dst);
            files.Remove(f);
            if (!files.Contains(dst)) files.Add(dst);
        }
        else if (roll < 76)
        {
            string f = files[rng.Next(files.Count)];
            fs.Remove(f);
            files.Remove(f);
        }
        else if (roll < 80)
        {
            string f = files[rng.Next(files.Count)];
            string l = New();
            fs.Link(f, l);
            files.Add(l);
        }
        else if (roll < 83)
        {
            string l = New();
            fs.CreateSymlink(l, $"target-{rng.Next(1000)}");
            links.Add(l);
        }
        else if (roll < 90)
        {
            var all = files.Concat(dirs).Concat(links).ToList();
            string p = all[rng.Next(all.Count)];
            if (rng.Next(3) == 0 && fs.ListXattrs(p) is { Count: > 0 } xs) fs.RemoveXattr(p, xs[rng.Next(xs.Count)].Name);
            else fs.SetXattr(p, $"user.x{rng.Next(5)}", SendReceiveTests.Bytes(rng.Next(0, 300), rng.Next()));
        }
        else if (roll < 95)
        {
            var all = files.Concat(dirs).ToList();
            fs.SetAttributes(all[rng.Next(all.Count)], mode: (uint)rng.Next(0x1FF), uid: (uint)rng.Next(3), gid: (uint)rng.Next(3),
                modified: DateTimeOffset.FromUnixTimeSeconds(rng.Next()));
        }
        else if (dirs.Count > 1)
        {
            // Remove an empty directory, if one is.
            string d = dirs[1 + rng.Next(dirs.Count - 1)];
            if (fs.ListDirectory(d).Count == 0) { fs.Remove(d); dirs.Remove(d); }
        }
    }
}
