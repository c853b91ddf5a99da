using Cowfish.Format;

namespace Cowfish.Streams;

/// <summary>
/// Extends a CRC32C by a 4 KiB block whose own CRC32C is known, without the block's bytes:
/// crc(A ‖ B) = shift(crc(A), |B|) ⊕ crc(B), where shift is a fixed linear map over GF(2) (the
/// method of zlib's crc32_combine). A resumed send uses it to frame the data records it skips from
/// the CRCs the extent records keep, so that resuming costs no data reads.
/// </summary>
internal static class Crc32CBlocks
{
    private const uint Polynomial = 0x82F63B78u; // Castagnoli, reflected
    private static readonly uint[] ShiftBlock = Shift(Layout.BlockSize);

    /// <summary>The CRC32C of A followed by a block, from the CRC32C of each.</summary>
    public static uint Append(uint crcA, uint crcBlock) => Times(ShiftBlock, crcA) ^ crcBlock;

    /// <summary>A running (not finalized) CRC32C state extended by a block whose finalized CRC32C is known.</summary>
    public static uint AppendToState(uint state, uint crcBlock) => ~Append(~state, crcBlock);

    /// <summary>The operator that appends <paramref name="bytes"/> zero bytes (a power of two) to a CRC.</summary>
    private static uint[] Shift(int bytes)
    {
        var op = new uint[32];
        op[0] = Polynomial; // one zero bit
        for (int n = 1; n < 32; n++) op[n] = 1u << (n - 1);
        var tmp = new uint[32];
        for (long bits = 1; bits < (long)bytes * 8; bits <<= 1)
        {
            for (int n = 0; n < 32; n++) tmp[n] = Times(op, op[n]);
            (op, tmp) = (tmp, op);
        }
        return op;
    }

    private static uint Times(uint[] matrix, uint vector)
    {
        uint sum = 0;
        for (int i = 0; vector != 0; i++, vector >>= 1)
            if ((vector & 1) != 0) sum ^= matrix[i];
        return sum;
    }
}
