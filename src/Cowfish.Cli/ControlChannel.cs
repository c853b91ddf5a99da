using System.Buffers.Binary;

namespace Cowfish.Cli;

/// <summary>
/// The framing of the control socket that <c>cowfish serve</c> opens next to its pool
/// (<c>POOL.ctl</c>). Each frame is a type byte, a 32-bit little-endian length, and that many
/// bytes. The client sends one <see cref="Request"/> (JSON: argv, working directory, whether to
/// show progress), then <see cref="Stdin"/> frames when asked; the server sends
/// <see cref="Stdout"/>, <see cref="Stderr"/> and <see cref="StdinWanted"/> frames, and ends with
/// <see cref="Exit"/> (the exit code as a 32-bit integer).
/// </summary>
internal static class ControlChannel
{
    public const byte Request = (byte)'R';
    public const byte Stdin = (byte)'I';
    public const byte Stdout = (byte)'O';
    public const byte Stderr = (byte)'E';
    public const byte StdinWanted = (byte)'N';
    public const byte Exit = (byte)'X';

    /// <summary>Largest frame either side accepts.</summary>
    public const int MaxFrame = 16 << 20;

    /// <summary>The control socket of a pool file.</summary>
    public static string SocketPath(string pool) => Path.GetFullPath(pool) + ".ctl";

    public static void Write(Stream s, byte type, ReadOnlySpan<byte> payload)
    {
        Span<byte> h = stackalloc byte[5];
        h[0] = type;
        BinaryPrimitives.WriteInt32LittleEndian(h[1..], payload.Length);
        s.Write(h);
        s.Write(payload);
        s.Flush();
    }

    /// <summary>Reads one frame; null at a clean end of stream. Throws <see cref="IOException"/> on a bad frame.</summary>
    public static (byte Type, byte[] Payload)? Read(Stream s)
    {
        Span<byte> h = stackalloc byte[5];
        int got = 0;
        while (got < 5)
        {
            int n = s.Read(h[got..]);
            if (n == 0)
            {
                if (got == 0) return null;
                throw new IOException("control connection closed mid-frame");
            }
            got += n;
        }
        int len = BinaryPrimitives.ReadInt32LittleEndian(h[1..]);
        if (len < 0 || len > MaxFrame) throw new IOException($"control frame of {len} bytes is out of bounds");
        var payload = new byte[len];
        s.ReadExactly(payload);
        return (h[0], payload);
    }
}
