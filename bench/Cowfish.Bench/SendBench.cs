using System.Diagnostics;
using System.IO.Pipes;
using System.Text;
using Cowfish.Files;
using Cowfish.Streams;

namespace Cowfish.Bench;

/// <summary>
/// Send and receive of one large file: full send (stream discarded), send | receive through a pipe
/// into a second pool on the same disk, and an incremental send after 1 % of the file's 4 KiB blocks
/// were rewritten at random (time, stream size, stream size over the changed bytes). The baseline is
/// btrfs send / send | receive / send -p on a loop device over a file in the same directory, with the
/// same data and the same changed blocks. Caches are dropped before each timed run.
/// </summary>
internal static class SendBench
{
    private const int Block = 4096;


    private sealed record Figures(double FullSeconds, double PipeSeconds, double IncSeconds, long IncBytes);

    public static string Run(BenchContext ctx)
    {
        long size = ctx.Quick ? 256L << 20 : 1L << 30;
        long blocks = size / Block;
        var rng = new Random(42);
        var changed = new HashSet<long>();
        while (changed.Count < blocks / 100) changed.Add(rng.NextInt64(blocks));
        long changedBytes = changed.Count * (long)Block;

        ctx.Progress($"send: cowfish, {Fmt.MB(size)} file, {changed.Count} blocks changed");
        var cow = Cowfish(ctx, size, changed);
        Figures? btrfs = null;
        string? btrfsNote = null;
        if (LoopFs.Preflight() is { } why) btrfsNote = why;
        else
        {
            ctx.Progress("send: btrfs");
            btrfs = Btrfs(ctx, size, changed);
        }

        var sb = new StringBuilder();
        sb.AppendLine("### send").AppendLine();
        sb.AppendLine($"One file of {Fmt.MB(size)} of random data in a read-only snapshot; then {changed.Count:N0} random 4 KiB blocks (1 %, {Fmt.MB(changedBytes)}) rewritten and a second snapshot. Caches dropped before each timed run.").AppendLine();
        var t = new Table("", "full send", "send \\| receive", "incremental send", "incremental stream", "stream / changed bytes");
        void Row(string name, Figures f) => t.Add(name, Fmt.MBps(size / f.FullSeconds), Fmt.MBps(size / f.PipeSeconds), Fmt.Time(f.IncSeconds),
            Fmt.MB(f.IncBytes), Fmt.Num(f.IncBytes / (double)changedBytes, "0.000") + "×");
        Row("Cowfish", cow);
        if (btrfs is not null) Row("btrfs (loop device)", btrfs);
        sb.Append(t).AppendLine();
        if (btrfsNote is not null) sb.AppendLine($"btrfs not measured: {btrfsNote}").AppendLine();
        if (btrfs is not null)
        {
            sb.AppendLine($"Ratios Cowfish / btrfs: full send {Fmt.Ratio(btrfs.FullSeconds / cow.FullSeconds)}, send | receive {Fmt.Ratio(btrfs.PipeSeconds / cow.PipeSeconds)}, "
                + $"incremental time {Fmt.Ratio(btrfs.IncSeconds / cow.IncSeconds)} (above 1 is faster).").AppendLine();
            ctx.Key("send", "full send", Fmt.MBps(size / cow.FullSeconds), Fmt.Ratio(btrfs.FullSeconds / cow.FullSeconds) + " of btrfs", "btrfs: " + Fmt.MBps(size / btrfs.FullSeconds));
        }
        ctx.Key("send", "incremental, 1 % of 4 KiB blocks", Fmt.MB(cow.IncBytes), Fmt.Num(cow.IncBytes / (double)changedBytes, "0.000") + "× changed bytes", "≤ 1.2×");
        return sb.ToString();
    }

    private static void FillFile(Action<long, byte[]> write, long size)
    {
        var chunk = new byte[1 << 20];
        var rng = new Random(7);
        for (long off = 0; off < size; off += chunk.Length)
        {
            rng.NextBytes(chunk);
            write(off, chunk);
        }
    }

    private static void DropCaches()
    {
        if (!Native.IsRoot) return;
        Shell.Run("sync");
        File.WriteAllText("/proc/sys/vm/drop_caches", "3");
    }

    private static Figures Cowfish(BenchContext ctx, long size, HashSet<long> changed)
    {
        string pa = ctx.TempPath("send-a.pool"), pb = ctx.TempPath("send-b.pool");
        try
        {
            using var a = FileSystem.Create(pa);
            a.CreateVolume("v");
            a.CreateFile("v/big");
            FillFile((off, data) => a.Write("v/big", off, data), size);
            a.Flush();
            a.Snapshot("v", "s1", readOnly: true);

            DropCaches();
            var sw = Stopwatch.StartNew();
            SendStream.Write(a, "s1", null, new CountingStream());
            double full = sw.Elapsed.TotalSeconds;

            DropCaches();
            using var b = FileSystem.Create(pb);
            sw.Restart();
            using (var server = new AnonymousPipeServerStream(PipeDirection.Out))
            using (var client = new AnonymousPipeClientStream(PipeDirection.In, server.ClientSafePipeHandle))
            {
                var send = Task.Run(() => { try { SendStream.Write(a, "s1", null, server); } finally { server.Dispose(); } });
                ReceiveStream.Apply(b, client);
                send.GetAwaiter().GetResult();
            }
            double pipe = sw.Elapsed.TotalSeconds;

            var block = new byte[Block];
            var rng = new Random(9);
            foreach (long blk in changed)
            {
                rng.NextBytes(block);
                a.Write("v/big", blk * Block, block);
            }
            a.Flush();
            a.Snapshot("v", "s2", readOnly: true);
            DropCaches();
            var counter = new CountingStream();
            sw.Restart();
            SendStream.Write(a, "s2", "s1", counter);
            return new Figures(full, pipe, sw.Elapsed.TotalSeconds, counter.Bytes);
        }
        finally
        {
            File.Delete(pa);
            File.Delete(pb);
        }
    }

    private static Figures Btrfs(BenchContext ctx, long size, HashSet<long> changed)
    {
        using var fs = LoopFs.Create("btrfs", ctx.TempPath("send-btrfs.img"), size * 3 + (1L << 30), ctx.TempPath("send-btrfs-mnt"));
        string big = Path.Combine(fs.DataDir, "big");
        using (var f = new FileStream(big, FileMode.CreateNew, FileAccess.Write))
        {
            FillFile((off, data) => f.Write(data), size);
            f.Flush(flushToDisk: true);
        }
        Native.BtrfsSnapshot(fs.DataDir, fs.Mount, "s1", readOnly: true);
        string s1 = Path.Combine(fs.Mount, "s1"), s2 = Path.Combine(fs.Mount, "s2"), recv = Path.Combine(fs.Mount, "recv");
        Directory.CreateDirectory(recv);

        DropCaches();
        double full = Shell.Timed("bash", "-c", $"btrfs send -q '{s1}' > /dev/null");
        DropCaches();
        double pipe = Shell.Timed("bash", "-c", $"btrfs send -q '{s1}' | btrfs receive -q '{recv}'");

        using (var f = new FileStream(big, FileMode.Open, FileAccess.Write))
        {
            var block = new byte[Block];
            var rng = new Random(9);
            foreach (long blk in changed)
            {
                rng.NextBytes(block);
                RandomAccess.Write(f.SafeFileHandle, block, blk * Block);
            }
            f.Flush(flushToDisk: true);
        }
        Native.BtrfsSnapshot(fs.DataDir, fs.Mount, "s2", readOnly: true);
        string stream = ctx.TempPath("send-btrfs.stream");
        DropCaches();
        double inc = Shell.Timed("btrfs", "send", "-q", "-p", s1, "-f", stream, s2);
        long bytes = new FileInfo(stream).Length;
        File.Delete(stream);
        return new Figures(full, pipe, inc, bytes);
    }
}
