using System.Text;
using Cowfish.Files;

namespace Cowfish.Cli;

/// <summary>The verbs over a file's bytes: <c>write</c> (from stdin), <c>cat</c>, <c>truncate</c>, <c>punch</c>.</summary>
internal static class DataCommands
{
    private const int Chunk = 1 << 20;

    public static readonly Command[] All =
    [
        new("write", "write POOL VOLUME/PATH OFFSET", "Write stdin at OFFSET (like pwrite), creating the file if missing; durable on exit.", Write),
        new("cat", "cat POOL VOLUME/PATH", "Print a file's content to stdout.", Cat),
        new("truncate", "truncate POOL VOLUME/PATH SIZE", "Set a file's size (creating it if missing); growing adds a hole.", Truncate),
        new("punch", "punch POOL VOLUME/PATH OFFSET LENGTH", "Deallocate a range: it reads as zeros and the size stays.", Punch),
    ];

    private static int Write(Args a, Io io)
    {
        a.Expect(3, "POOL VOLUME/PATH OFFSET");
        string path = a.Positional[1];
        long offset = a.Size(2, "OFFSET");
        var stdin = io.In ?? throw new UsageException("there is no standard input to read");
        using var fs = io.Pools.OpenFiles(a.Positional[0]);
        PoolPaths.EnsureFile(fs, path);
        var buf = new byte[Chunk];
        long done = 0;
        while (true)
        {
            int n = stdin.ReadAtLeast(buf, buf.Length, throwOnEndOfStream: false);
            if (n == 0) break;
            fs.Write(path, offset + done, buf.AsSpan(0, n), durable: false);
            done += n;
            if (n < buf.Length) break;
        }
        fs.Flush();
        return ExitCodes.Ok;
    }

    private static int Cat(Args a, Io io)
    {
        a.Expect(2, "POOL VOLUME/PATH");
        string path = a.Positional[1];
        using var fs = io.Pools.OpenFiles(a.Positional[0]);
        var st = fs.Stat(path);
        if (st.Type != FileType.File) throw new InvalidRequestException($"{path}: not a regular file");
        var buf = new byte[Chunk];
        // Text mode (no binary stdout, as in tests) decodes UTF-8 across chunk edges with one decoder.
        var decoder = io.BinaryOut is null ? Encoding.UTF8.GetDecoder() : null;
        var chars = decoder is null ? null : new char[Encoding.UTF8.GetMaxCharCount(Chunk)];
        for (long off = 0; off < (long)st.Size;)
        {
            int n = fs.Read(path, off, buf.AsSpan(0, (int)Math.Min(Chunk, (long)st.Size - off)));
            if (n == 0) break;
            if (io.BinaryOut is { } bin) bin.Write(buf, 0, n);
            else
            {
                int c = decoder!.GetChars(buf, 0, n, chars!, 0, flush: false);
                io.Out.Write(chars!, 0, c);
            }
            off += n;
        }
        io.BinaryOut?.Flush();
        return ExitCodes.Ok;
    }

    private static int Truncate(Args a, Io io)
    {
        a.Expect(3, "POOL VOLUME/PATH SIZE");
        string path = a.Positional[1];
        long size = a.Size(2, "SIZE");
        using var fs = io.Pools.OpenFiles(a.Positional[0]);
        PoolPaths.EnsureFile(fs, path);
        fs.Truncate(path, size);
        fs.Reclaim();
        return ExitCodes.Ok;
    }

    private static int Punch(Args a, Io io)
    {
        a.Expect(4, "POOL VOLUME/PATH OFFSET LENGTH");
        string path = a.Positional[1];
        long offset = a.Size(2, "OFFSET"), length = a.Size(3, "LENGTH");
        using var fs = io.Pools.OpenFiles(a.Positional[0]);
        fs.PunchHole(path, offset, length);
        fs.Flush();
        fs.Reclaim();
        return ExitCodes.Ok;
    }
}
