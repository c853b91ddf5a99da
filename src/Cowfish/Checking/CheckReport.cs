namespace Cowfish.Checking;

/// <summary>One fault found by check: what kind, at which block, and the bound that was broken.</summary>
public sealed record CheckFault(string Kind, ulong Address, string Message)
{
    public override string ToString() => $"{Kind} at block {Address}: {Message}";
}

/// <summary>Everything check found. A clean report has no faults.</summary>
public sealed class CheckReport
{
    public ulong Generation { get; init; }
    public ulong TotalBlocks { get; init; }
    public List<CheckFault> Faults { get; } = new();
    public int Trees { get; set; }
    public long Nodes { get; set; }
    public ulong UsedBlocks { get; set; }
    public ulong SharedBlocks { get; set; }
    public int PendingDrops { get; set; }
    /// <summary>Remarks that are not faults, such as a superblock slot left torn by a crash.</summary>
    public List<string> Notes { get; } = new();

    public bool IsClean => Faults.Count == 0;

    /// <summary>Throws when any fault was found, listing them all.</summary>
    public void ThrowIfFaults()
    {
        if (!IsClean)
            throw new CheckFailedException(this);
    }
}

/// <summary>Raised by strict mode when check finds faults after a commit.</summary>
public sealed class CheckFailedException : CowfishException
{
    public CheckFailedException(CheckReport report)
        : base($"check found {report.Faults.Count} fault(s) at generation {report.Generation}:\n  " + string.Join("\n  ", report.Faults.Take(50)))
    {
        Report = report;
    }

    public CheckReport Report { get; }
}
