using System.Buffers.Binary;
using System.Runtime.Intrinsics.Arm;
using System.Runtime.Intrinsics.X86;

namespace Cowfish.Format;

/// <summary>CRC-32C (Castagnoli), through the SSE4.2 or ARMv8 instruction when present, else a table.</summary>
internal static class Crc32C
{
    private static readonly uint[] Table = BuildTable();

    public static uint Compute(ReadOnlySpan<byte> data) => ~Update(0xFFFFFFFFu, data);

    /// <summary>Bytes per lane of the three-lane loop: three lanes of 1,360 bytes cover 4,080 of a 4 KiB block.</summary>
    private const int Lane = 1360;

    // Advancing a CRC state over n zero bytes is linear in the state, so it is a table lookup per
    // state byte: ShiftLane advances over one lane, ShiftTwoLanes over two. Built from 32 basis states.
    private static readonly uint[] ShiftLane = BuildShift(Lane);
    private static readonly uint[] ShiftTwoLanes = BuildShift(2 * Lane);

    /// <summary>Continues a running CRC (pre-inverted state, as returned by a previous call).</summary>
    public static uint Update(uint crc, ReadOnlySpan<byte> data)
    {
        if (Sse42.X64.IsSupported)
        {
            // Three independent chains keep the CRC unit busy (one instruction's latency is three of
            // its throughput); the lanes are then joined: crc(A‖B‖C) = shift₂(a) ^ shift₁(b) ^ c.
            while (data.Length >= 3 * Lane)
            {
                ulong a = crc, b = 0, c3 = 0;
                var la = data[..Lane];
                var lb = data.Slice(Lane, Lane);
                var lc = data.Slice(2 * Lane, Lane);
                for (int i = 0; i < Lane; i += 8)
                {
                    a = Sse42.X64.Crc32(a, BinaryPrimitives.ReadUInt64LittleEndian(la[i..]));
                    b = Sse42.X64.Crc32(b, BinaryPrimitives.ReadUInt64LittleEndian(lb[i..]));
                    c3 = Sse42.X64.Crc32(c3, BinaryPrimitives.ReadUInt64LittleEndian(lc[i..]));
                }
                crc = Shift(ShiftTwoLanes, (uint)a) ^ Shift(ShiftLane, (uint)b) ^ (uint)c3;
                data = data[(3 * Lane)..];
            }
            ulong c = crc;
            while (data.Length >= 8)
            {
                c = Sse42.X64.Crc32(c, BinaryPrimitives.ReadUInt64LittleEndian(data));
                data = data[8..];
            }
            crc = (uint)c;
            foreach (byte b in data) crc = Sse42.Crc32(crc, b);
            return crc;
        }
        if (Crc32.Arm64.IsSupported)
        {
            while (data.Length >= 8)
            {
                crc = Crc32.Arm64.ComputeCrc32C(crc, BinaryPrimitives.ReadUInt64LittleEndian(data));
                data = data[8..];
            }
            foreach (byte b in data) crc = Crc32.ComputeCrc32C(crc, b);
            return crc;
        }
        return UpdateSoftware(crc, data);
    }

    internal static uint UpdateSoftware(uint crc, ReadOnlySpan<byte> data)
    {
        foreach (byte b in data) crc = Table[(crc ^ b) & 0xFF] ^ (crc >> 8);
        return crc;
    }

    private static uint Shift(uint[] table, uint state) =>
        table[state & 0xFF] ^ table[256 + ((state >> 8) & 0xFF)] ^ table[512 + ((state >> 16) & 0xFF)] ^ table[768 + (state >> 24)];

    /// <summary>The table advancing a raw CRC state over <paramref name="zeros"/> zero bytes.</summary>
    private static uint[] BuildShift(int zeros)
    {
        var zero = new byte[zeros];
        var basis = new uint[32];
        for (int bit = 0; bit < 32; bit++) basis[bit] = UpdateSoftware(1u << bit, zero);
        var t = new uint[4 * 256];
        for (int k = 0; k < 4; k++)
            for (int v = 0; v < 256; v++)
            {
                uint r = 0;
                for (int bit = 0; bit < 8; bit++)
                    if ((v & (1 << bit)) != 0) r ^= basis[8 * k + bit];
                t[256 * k + v] = r;
            }
        return t;
    }

    private static uint[] BuildTable()
    {
        var t = new uint[256];
        for (uint i = 0; i < 256; i++)
        {
            uint c = i;
            for (int k = 0; k < 8; k++) c = (c & 1) != 0 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
            t[i] = c;
        }
        return t;
    }
}
