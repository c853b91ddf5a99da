using System.Text.Json;
using Cowfish.Format;
using Cowfish.Relocation;

namespace Cowfish.Cli;

/// <summary>The verbs that move blocks: <c>relocate</c> (compact and shrink a pool) and <c>defrag</c> (one file).</summary>
internal static class RelocationCommands
{
    public static readonly Command[] All =
    [
        new("relocate", "relocate POOL [--shrink] [--target-size SIZE] | --compact [--json]",
            "Move every live block out of the pool's tail, keeping all sharing; with --shrink, then cut the pool file; with --compact, empty the mostly free regions instead.", Relocate,
            Flags: ["--shrink", "--compact", "--json"], Options: ["--target-size"], Details: RelocateHelp),
        new("defrag", "defrag POOL VOLUME/PATH [--json]",
            "Rewrite a fragmented file contiguously; extents it shares with clones or snapshots move whole, and stay shared.", Defrag,
            Flags: ["--json"], Details: DefragHelp),
    ];

    private const string RelocateHelp = """

        Without --target-size, the target starts at the smallest size that leaves room to move
        the tail (the blocks in use plus an eighth, plus 1 MiB) and moves up when the free space
        below it proves too fragmented for an extent being moved, or writers running alongside fill
        it; with --target-size, either refuses instead. Blocks at or past the target move below it,
        once each however many clones, snapshots or files share them. Without --shrink (and
        without --target-size) the blocks move but the file keeps its size. --target-size implies
        --shrink. It runs online: reads, sends and other commands go on, and writes wait for one
        slice at most (a transaction of about 2 ms). A send that pins an older state holds the
        shrink back (up to 30 s, then it refuses, and a later relocate finishes it).

        With --compact, the pool keeps its size: every 4 MiB region that is at most a quarter
        full (but not empty) is emptied, the emptiest first, as long as what they hold fits in
        half the free space elsewhere. What they hold moves as low in the pool as it fits, once
        each however many files share it, so free space comes back as long runs and new writes
        get contiguous extents. It runs online, in the same slices.

        """;

    private const string DefragHelp = """

        The file gets one region (or, when free space is short of that, the longest free runs in
        turn), and its pieces go there in file order. Data the file holds alone is rewritten,
        only the blocks it uses. An extent it shares with a clone, a snapshot or another file
        moves whole, once, and every file that shares it is pointed at the new place, so used and
        shared space stay the same. That walk reads every tree of the pool. It runs online:
        writes to the file go on, and other writers wait for one slice at most (about 2 ms).

        """;

    private static int Relocate(Args a, Io io)
    {
        a.Expect(1, "POOL");
        if (a.Has("--compact")) return Compact(a, io);
        string? size = a.Option("--target-size");
        bool shrink = a.Has("--shrink") || size is not null;
        using var fs = io.Pools.OpenFiles(a.Positional[0]);
        ulong target;
        if (size is null) target = PoolRelocator.CompactTarget(fs);
        else
        {
            long bytes = Args.ParseSize(size);
            if (bytes <= 0) throw new UsageException("--target-size must be positive");
            target = ((ulong)bytes + (ulong)Layout.BlockSize - 1) / (ulong)Layout.BlockSize;
        }
        var progress = new Progress(io, "relocate", (long)PoolRelocator.BlocksToMove(fs, target) * Layout.BlockSize);
        RelocationResult r;
        try
        {
            r = PoolRelocator.Relocate(fs, target, new RelocationOptions
            {
                Shrink = shrink,
                GrowTarget = size is null,
                Progress = blocks => progress.Report(blocks * Layout.BlockSize),
            });
        }
        finally { progress.Done(); }
        ulong bs = (ulong)Layout.BlockSize;
        if (a.Has("--json"))
            io.Out.WriteLine(JsonSerializer.Serialize(new
            {
                size_before = r.BlocksBefore * bs,
                size_after = r.BlocksAfter * bs,
                shrunk = r.Shrunk && r.BlocksAfter < r.BlocksBefore,
                target = r.Target * bs,
                passes = r.Passes,
                slices = r.Slices,
                nodes_rewritten = r.NodesRewritten,
                data_bytes_moved = r.DataBlocksMoved * (long)bs,
            }, Cli.Json));
        else if (r.BlocksAfter < r.BlocksBefore)
            io.Out.WriteLine($"shrunk {Cli.FormatBytes(r.BlocksBefore * bs)} -> {Cli.FormatBytes(r.BlocksAfter * bs)} "
                + $"(moved {Cli.FormatBytes((ulong)r.DataBlocksMoved * bs)} of data, rewrote {r.NodesRewritten} tree nodes)");
        else if (r.Passes > 0)
            io.Out.WriteLine($"moved {Cli.FormatBytes((ulong)r.DataBlocksMoved * bs)} of data and {r.NodesRewritten} tree nodes below {Cli.FormatBytes(target * bs)}");
        else
            io.Out.WriteLine($"nothing to move: the pool is {Cli.FormatBytes(r.BlocksBefore * bs)}");
        return ExitCodes.Ok;
    }

    private static int Compact(Args a, Io io)
    {
        if (a.Has("--shrink") || a.Option("--target-size") is not null) throw new UsageException("--compact keeps the pool's size: it goes with neither --shrink nor --target-size");
        using var fs = io.Pools.OpenFiles(a.Positional[0]);
        var progress = new Progress(io, "compact", 0);
        CompactionResult r;
        try { r = PoolRelocator.Compact(fs, new CompactionOptions { Progress = blocks => progress.Report(blocks * Layout.BlockSize) }); }
        finally { progress.Done(); }
        ulong bs = (ulong)Layout.BlockSize;
        if (a.Has("--json"))
            io.Out.WriteLine(JsonSerializer.Serialize(new
            {
                regions_emptied = r.Regions,
                data_bytes_moved = r.DataBlocksMoved * (long)bs,
                data_bytes_left = r.DataBlocksLeft * (long)bs,
                nodes_rewritten = r.NodesRewritten,
                slices = r.Slices,
                free_runs_before = r.FreeBefore.Runs,
                free_bytes_in_runs_before = r.FreeBefore.Blocks * bs,
                longest_free_run_before = r.FreeBefore.Longest * bs,
                free_runs_after = r.FreeAfter.Runs,
                free_bytes_in_runs_after = r.FreeAfter.Blocks * bs,
                longest_free_run_after = r.FreeAfter.Longest * bs,
            }, Cli.Json));
        else if (r.Regions == 0)
            io.Out.WriteLine($"nothing to compact: no 4 MiB region is a quarter full or less (longest free run {Cli.FormatBytes(r.FreeBefore.Longest * bs)})");
        else
            io.Out.WriteLine($"emptied {r.Regions} region{(r.Regions == 1 ? "" : "s")} of 4 MiB: moved {Cli.FormatBytes((ulong)r.DataBlocksMoved * bs)} of data and {r.NodesRewritten} tree nodes; "
                + $"free space in runs of 1 MiB or more {Cli.FormatBytes(r.FreeBefore.Blocks * bs)} -> {Cli.FormatBytes(r.FreeAfter.Blocks * bs)}, "
                + $"longest free run {Cli.FormatBytes(r.FreeBefore.Longest * bs)} -> {Cli.FormatBytes(r.FreeAfter.Longest * bs)}");
        return ExitCodes.Ok;
    }

    private static int Defrag(Args a, Io io)
    {
        a.Expect(2, "POOL VOLUME/PATH");
        using var fs = io.Pools.OpenFiles(a.Positional[0]);
        string path = a.Positional[1];
        var progress = new Progress(io, "defrag", (long)fs.Stat(path).Size);
        DefragResult r;
        try { r = Defragmenter.Defragment(fs, path, done => progress.Report(done)); }
        finally { progress.Done(); }
        if (a.Has("--json"))
            io.Out.WriteLine(JsonSerializer.Serialize(new
            {
                fragments_before = r.FragmentsBefore,
                fragments_after = r.FragmentsAfter,
                bytes_rewritten = r.BytesRewritten,
                shared_bytes_moved = r.SharedBytesMoved,
                shared_bytes = r.SharedBytes,
            }, Cli.Json));
        else if (r.BytesRewritten == 0 && r.SharedBytesMoved == 0)
            io.Out.WriteLine($"{path}: already contiguous ({r.FragmentsBefore} fragment{(r.FragmentsBefore == 1 ? "" : "s")})");
        else
            io.Out.WriteLine($"{path}: {r.FragmentsBefore} fragments -> {r.FragmentsAfter} ({Cli.FormatBytes((ulong)r.BytesRewritten)} rewritten"
                + (r.SharedBytesMoved > 0 ? $", {Cli.FormatBytes((ulong)r.SharedBytesMoved)} of extents shared with clones or snapshots moved, still shared)" : ")"));
        return ExitCodes.Ok;
    }
}
