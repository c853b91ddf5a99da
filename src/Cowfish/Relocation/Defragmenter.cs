using Cowfish.Files;
using Cowfish.Format;

namespace Cowfish.Relocation;

/// <summary>
/// Rewrites a fragmented file into fresh contiguous space, copy-on-write.
/// </summary>
/// <remarks>
/// The choice (issue 5): a file that shares any of its data (with a clone, a snapshot, a range
/// clone or a dedupe partner, as <see cref="FileSystem.Usage"/> measures it) is left alone, so
/// defrag never breaks sharing and never costs space; a file that holds all its data exclusively
/// is rewritten, data range by data range (holes stay holes), in chunks of one extent record
/// (256 blocks) each, which the next-fit allocator lays one after another. Each chunk is read and
/// mapped under the file's range lock, so writers of other blocks go on and no write is lost;
/// the old blocks are freed with deferred reuse, so readers of older snapshots are unaffected.
/// A clone taken while the defrag runs only makes it copy data that the clone then shares with
/// nobody: content and sharing stay correct, only that space is spent.
/// </remarks>
public static class Defragmenter
{
    private const ulong ChunkBlocks = 256;

    /// <summary>Defragments one regular file; see the remarks for which files it rewrites.</summary>
    public static DefragResult Defragment(FileSystem fs, string path, Action<long>? progress = null)
    {
        int before = fs.Fragments(path);
        var usage = fs.Usage(path);
        if (usage.SharedBytes > 0 || before <= 1)
            return new DefragResult(before, before, 0, usage.SharedBytes);
        long done = 0;
        const ulong bs = (ulong)Layout.BlockSize;
        foreach (var (offset, length) in fs.DataRanges(path))
        {
            ulong b0 = (ulong)offset / bs, b1 = ((ulong)offset + (ulong)length + bs - 1) / bs;
            for (ulong b = b0; b < b1; b += ChunkBlocks)
            {
                ulong e = Math.Min(b1, b + ChunkBlocks);
                fs.RewriteInPlace(path, b, e);
                done += (long)((e - b) * bs);
                progress?.Invoke(done);
            }
        }
        fs.Flush();
        return new DefragResult(before, fs.Fragments(path), done, 0);
    }
}

/// <summary>What a defrag did: fragments before and after, bytes rewritten, and shared bytes that made it leave the file alone.</summary>
public sealed record DefragResult(int FragmentsBefore, int FragmentsAfter, long BytesRewritten, ulong SharedBytes);
