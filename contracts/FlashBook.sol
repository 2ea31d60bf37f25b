// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @title FlashBook: a gas-lean on-chain limit order book for market makers on Sei EVM.
/// @notice Units. A market trades a base token against a quote token. Prices are integer
/// ticks, sizes integer lots:
///   - `lotUnits`  = base-token base units per lot   (lot_size  * 10**baseDecimals)
///   - `tickValue` = quote-token base units per tick per lot
///                   (tick_size * lot_size * 10**quoteDecimals)
/// so `size` lots at `price` ticks are `size * lotUnits` base units and
/// `price * size * tickValue` quote units. A resting buy locks the quote amount, a
/// resting sell locks the base amount; both are released on cancel.
///
/// Storage is laid out for Sei, where a zero-to-nonzero SSTORE is expensive (a chain
/// parameter, 72,000 gas in sei-chain v6.3.0):
///   - each owner has 232 order slots per market, chosen by the client; a slot is reused
///     and its word never returns to zero (bit 255 is a sentinel);
///   - a seat word per (owner, market) holds the owner's trader index and a mask of the
///     slots that hold an order, so cancelAll costs what the owner has; the mask decides
///     (a cancel clears the bit and leaves the order word as it is);
///   - price levels are FIFO queues linked through the order words; four levels share
///     one storage word (head and tail, 32 bits each); an emptied level keeps its stale
///     tail, so a level word never returns to zero either; `warm` pre-pays level and
///     bitmap words over a price range so a later trend through it writes none;
///   - a tick bitmap (127 ticks of both sides per word plus a sentinel bit, so quotes on
///     both sides of a narrow spread share one word) and best-price hints in the market
///     word find the top of the book;
///   - balances live in one word per (market, owner) account: quote 128 bits, base 120;
///     a deposit that would take the market's holdings past those widths is refused, so
///     no account field (free plus locked is at most the holdings) can overflow.
/// Every key is built from validated parts that occupy disjoint bit ranges, so two
/// different (owner, market) pairs can never share a word.
///
/// Safety levers: a guardian can pause new orders and takes in a market (never cancels
/// or withdrawals); the admin (two-step transfer) lists, delists to cancel-only, sets a
/// minimum order size. Loops a stranger can lengthen are bounded: takes stop at a
/// caller-given number of levels and orders and a fixed scan budget, `depth` is paginated,
/// levels per side are capped. A scan that runs out of its budget keeps what it proved in
/// the best-price hint (a post-only check that cannot tell rejects REJECT_SCAN, never a
/// false cross), so no arrangement of levels can stop a side for good.
contract FlashBook {
    // ------------------------------------------------------------------ constants
    uint256 private constant SENTINEL = 1 << 255;
    uint256 private constant LIVE = 1 << 225;
    uint256 private constant U8 = 0xff;
    uint256 private constant U16 = 0xffff;
    uint256 private constant U32 = 0xffffffff;
    uint256 private constant U54 = (1 << 54) - 1;
    uint256 private constant U64 = 0xffffffffffffffff;
    uint256 private constant U88 = (1 << 88) - 1;
    uint256 private constant U120 = (1 << 120) - 1;
    uint256 private constant U128 = (1 << 128) - 1;
    uint256 private constant NO_ASK = 0xffffffff;
    uint256 private constant MAX_TICK = 0xfffffffe;
    uint256 private constant TPW = 127; // ticks per bitmap word and side
    uint256 private constant U127 = (1 << 127) - 1;
    uint256 private constant MAX_SCAN_WORDS = 64;
    uint256 private constant MAX_MIN_SIZE = (1 << 13) - 1;
    uint256 private constant SLOT_MASK = (1 << 232) - 1;
    uint256 private constant MAX_DEPTH_ORDERS = 4096;
    uint256 private constant XLEVEL = 1 << 226; // order word: its level is in the overflow book
    uint256 private constant AHEAD = 1 << 227; // order word: ... and was placed far ahead of the ring
    uint256 private constant XBID = 1 << 54; // market word: bids (<< 1: asks) in the overflow book
    uint256 private constant RING_WORDS = 8;
    uint256 private constant NONE = type(uint256).max;
    // op word bits no op kind uses: side 161..167 and 248..255
    uint256 private constant OP_RESERVED = (uint256(0x7f) << 161) | (U8 << 248);

    /// Order slots per owner and market.
    uint256 public constant SLOTS = 232;
    /// Most decimals a listed token may have.
    uint256 public constant MAX_DECIMALS = 18;
    /// Ticks of the level ring: ticks that differ by a multiple of it share ring storage.
    uint256 public constant RING_TICKS = 127 * 8;
    /// Price levels per side and market; a placement that would add one more is rejected
    /// (REJECT_LEVEL_CAP).
    uint256 public constant MAX_LEVELS = 65535;

    /// Requote op kinds (bits 176..183 of an op word).
    uint256 public constant OP_CANCEL = 0;
    uint256 public constant OP_PLACE = 1;
    uint256 public constant OP_REPLACE = 2;

    /// OrderRejected reasons (bits 192..199 of the event info word).
    uint256 public constant REJECT_CROSS = 1;
    uint256 public constant REJECT_SLOT_BUSY = 2;
    uint256 public constant REJECT_FUNDS = 3;
    uint256 public constant REJECT_BAD_ORDER = 4;
    uint256 public constant REJECT_TOO_SMALL = 5;
    uint256 public constant REJECT_CLOSED = 6;
    /// The side already has MAX_LEVELS price levels and the order would add one more.
    uint256 public constant REJECT_LEVEL_CAP = 7;
    /// The cross check ran out of its scan budget before it could tell whether the order
    /// crosses (a stale best-price hint over a sparse book). The hint keeps what the scan
    /// proved, so the same order can go in on a later call.
    uint256 public constant REJECT_SCAN = 8;

    /// Market status (bits 158..159 of the market word).
    uint256 public constant OPEN = 0;
    uint256 public constant PAUSED = 1;
    uint256 public constant DELISTED = 2;

    // ------------------------------------------------------------------ events
    // `info` packs one order (LSB first): clientId 0..63 | price 64..95 | size 96..159 |
    // side 160 (0 bid, 1 ask) | slot 168..175 | market 176..191 | extra 192..255.
    // extra = reject reason for OrderRejected, the replaced client id for OrderReplaced,
    // the maker order's remaining lots for Fill.
    event OrderPlaced(address indexed owner, uint256 info);
    event OrderCancelled(address indexed owner, uint256 info);
    event OrderRejected(address indexed owner, uint256 info);
    event OrderReplaced(address indexed owner, uint256 info);
    event Fill(address indexed maker, address indexed taker, uint256 info);
    event Deposit(address indexed owner, uint256 indexed market, uint256 baseAmount, uint256 quoteAmount);
    event Withdraw(address indexed owner, uint256 indexed market, uint256 baseAmount, uint256 quoteAmount);
    event MarketCreated(
        uint256 indexed market,
        address base,
        address quote,
        uint256 tickValue,
        uint256 lotUnits,
        uint256 baseDecimals,
        uint256 quoteDecimals
    );
    event MarketStatus(uint256 indexed market, uint256 status);
    event MinSize(uint256 indexed market, uint256 minSize);
    event AdminTransferStarted(address indexed admin, address indexed pending);
    event AdminTransferred(address indexed previous, address indexed admin);
    event GuardianSet(address indexed guardian);
    event FeesSet(uint256 indexed market, uint256 takerFeeBps, uint256 makerRebateBps, address recipient);
    /// One per take in a market with fees: the taker's fee and the makers' rebates, in quote
    /// units; the difference accrues to the market's fee recipient.
    event TakerFees(uint256 indexed market, address indexed taker, uint256 fee, uint256 rebate);
    event FeesClaimed(uint256 indexed market, address indexed recipient, uint256 amount);

    // ------------------------------------------------------------------ errors
    error NotAdmin();
    error NotGuardian();
    error NoAccount();
    error UnknownMarket();
    error BadMarket();
    error BadToken(address token);
    error BadAmount();
    error FeeOnTransfer(address token);
    error InsufficientBalance();
    error TransferFailed();
    error BadSide();
    error Expired(uint256 deadline, uint256 timestamp);
    error MarketPaused(uint256 market);
    error MarketDelisted(uint256 market);
    error LevelCap(uint256 market, uint256 side);

    // ------------------------------------------------------------------ storage
    address public admin;
    address public pendingAdmin;
    address public guardian;
    uint256 public marketCount;
    uint256 public traderCount;
    mapping(address => uint256) public traderIndex;
    mapping(uint256 => address) public traderAddress;
    mapping(uint256 => address) public baseToken;
    mapping(uint256 => address) public quoteToken;
    // decimals word: baseDecimals 0..7 | quoteDecimals 8..15, read from the tokens at listing
    mapping(uint256 => uint256) internal _decimals;
    // fee word: takerFeeBps 0..15 | makerRebateBps 16..31 | recipient 32..191
    mapping(uint256 => uint256) internal _fees;
    /// Quote units of fees (net of rebates) a market's fee recipient can claim.
    mapping(uint256 => uint256) public feesAccrued;
    // market word: tickValue 0..53 | overflow levels: bids 54, asks 55 | lotUnits 56..143 |
    //              minSize 144..156 | fees on 157 | status 158..159 |
    //              bestBid 160..191 | bestAsk 192..223 | bidLevels 224..239 | askLevels 240..255
    mapping(uint256 => uint256) internal _markets;
    // seat word (key market << 160 | owner): slot mask 0..231 | trader 232..255. An order
    // is live only if its slot bit is set and its word has the live bit.
    mapping(uint256 => uint256) internal _seats;
    // order word (key market << 32 | ref, ref = trader << 8 | slot): clientId 0..63 |
    // price 64..95 | size 96..159 | prev 160..191 | next 192..223 | ask 224 | live 225 |
    // level in the overflow book 226 | sentinel 255
    mapping(uint256 => uint256) internal _orders;
    // ring level word (key market << 33 | side << 32 | (tick % RING_TICKS) >> 2):
    // 4 x (head 32 | tail 32). A ring entry holds the level of one tick of its residue
    // class (the tick of its orders); another tick of the class that has a level meanwhile
    // gets it in the overflow book, and so does a new level more than RING_TICKS / 2 behind
    // its side's best price (see _link and _far).
    mapping(uint256 => uint256) internal _levels;
    // ring bitmap word (key market << 32 | (tick / 127) % 8): bids 0..126 | asks 128..254 |
    // sentinel 255; a bit is set while its ring entry holds a level
    mapping(uint256 => uint256) internal _bitmaps;
    // account word (key market << 160 | owner): quote 0..127 | base 128..247 | sentinel 255
    mapping(uint256 => uint256) internal _accounts;
    // holdings word per market, laid out like an account word: what the accounts of the
    // market hold (free and locked) plus its unclaimed fees. Trades move funds between
    // accounts of one market, so only deposits, withdrawals and fee claims change it.
    mapping(uint256 => uint256) internal _held;
    // overflow book: level words keyed by the tick (market << 33 | side << 32 | tick >> 2),
    // bitmap words keyed by the tick (market << 32 | tick / 127), and per market a word of
    // its level counts and bounds: bids 0..31 | asks 32..63 | no overflow bid above 64..95 |
    // no overflow ask below 96..127 | ring bounds: bids 128..159, asks 160..191 | sentinel
    // 255. The bounds, valid while the side has overflow levels, let a scan skip the
    // overflow book where it holds nothing (a far level does not make every scan from a
    // stale hint walk its bitmap words) and start the ring at the side's ring bound: no
    // ring bid above the last tick of the bound's bitmap word, no ring ask below its first
    // (0 and NO_ASK: the ring holds none of the side's levels). A new ring level more than
    // a word ahead of it goes to the overflow book, so a level placed ahead of the book and
    // cancelled moves the bound back when it goes and a stale hint never makes a scan walk
    // the ring's levels as aliases lap by lap.
    mapping(uint256 => uint256) internal _xlevels;
    mapping(uint256 => uint256) internal _xbitmaps;
    mapping(uint256 => uint256) internal _xcount;

    /// Working state of one call, kept in memory and written back once.
    struct Ctx {
        uint256 market;
        uint256 mkt;
        uint256 trader;
        uint256 quote;
        uint256 base;
        uint256 seat;
        uint256 mkt0; // market word as read
        uint256 acct0; // account word as read
        uint256 seat0; // seat word as read
    }

    constructor() {
        admin = msg.sender;
        emit AdminTransferred(address(0), msg.sender);
    }

    // ================================================================== admin
    modifier onlyAdmin() {
        if (msg.sender != admin) revert NotAdmin();
        _;
    }

    /// @notice List a market. Both tokens must be contracts answering `decimals()` with at
    /// most MAX_DECIMALS (`BadToken` otherwise): a market holds at most 2**120 - 1 base and
    /// 2**128 - 1 quote units in all (see `deposit`), over 10**18 whole tokens at 18 decimals
    /// but about 1.3 at 36, which one depositor could fill.
    function createMarket(address base, address quote, uint256 tickValue, uint256 lotUnits)
        external
        onlyAdmin
        returns (uint256 market)
    {
        if (tickValue == 0 || tickValue > U54 || lotUnits == 0 || lotUnits > U88) revert BadMarket();
        if (base == quote) revert BadMarket();
        uint256 bd = _decimalsOf(base);
        uint256 qd = _decimalsOf(quote);
        market = ++marketCount;
        if (market > U16) revert BadMarket();
        baseToken[market] = base;
        quoteToken[market] = quote;
        _decimals[market] = bd | (qd << 8);
        _markets[market] = tickValue | (lotUnits << 56) | (1 << 144) | (NO_ASK << 192);
        emit MarketCreated(market, base, quote, tickValue, lotUnits, bd, qd);
    }

    /// @notice First step of an admin transfer; the new admin must call `acceptAdmin`.
    function transferAdmin(address next) external onlyAdmin {
        pendingAdmin = next;
        emit AdminTransferStarted(msg.sender, next);
    }

    function acceptAdmin() external {
        if (msg.sender != pendingAdmin || msg.sender == address(0)) revert NotAdmin();
        emit AdminTransferred(admin, msg.sender);
        admin = msg.sender;
        pendingAdmin = address(0);
    }

    function setGuardian(address next) external onlyAdmin {
        guardian = next;
        emit GuardianSet(next);
    }

    /// @notice Stop new orders and takes in `market` (0: every market). Cancels and
    /// withdrawals keep working. The guardian or the admin.
    function pause(uint256 market) external {
        if (msg.sender != guardian && msg.sender != admin) revert NotGuardian();
        if (market != 0) {
            _setStatus(market, PAUSED);
            return;
        }
        uint256 n = marketCount;
        for (uint256 i = 1; i <= n; ++i) {
            if ((_markets[i] >> 158) & 3 == OPEN) _setStatus(i, PAUSED);
        }
    }

    /// @notice Reopen a paused market. Admin only.
    function unpause(uint256 market) external onlyAdmin {
        _setStatus(market, OPEN);
    }

    /// @notice Delist: the market becomes cancel-only for good (no orders, takes or
    /// deposits; cancels and withdrawals work). Admin only.
    function delist(uint256 market) external onlyAdmin {
        _setStatus(market, DELISTED);
    }

    /// @notice Smallest size (lots) a new order may have, 1..8191. Admin only.
    function setMinSize(uint256 market, uint256 minSize) external onlyAdmin {
        uint256 m = _markets[market];
        if (m == 0) revert UnknownMarket();
        if (minSize == 0 || minSize > MAX_MIN_SIZE) revert BadMarket();
        _markets[market] = (m & ~(MAX_MIN_SIZE << 144)) | (minSize << 144);
        emit MinSize(market, minSize);
    }

    /// @notice Optional taker fee and maker rebate (basis points of the quote amount of
    /// each fill; fee <= 100, rebate <= fee), net proceeds to `recipient`. 0 by default.
    /// Takes effect at once, for takes already sent too: `take` has no maximum-fee
    /// parameter, so the 100 bps bound is all a taker can rely on; a taker that needs less
    /// reads `marketFees` and the `FeesSet` events.
    function setFees(uint256 market, uint256 takerFeeBps, uint256 makerRebateBps, address recipient)
        external
        onlyAdmin
    {
        uint256 m = _markets[market];
        if (m == 0) revert UnknownMarket();
        if (takerFeeBps > 100 || makerRebateBps > takerFeeBps) revert BadAmount();
        if (takerFeeBps != 0 && recipient == address(0)) revert BadAmount();
        _fees[market] = takerFeeBps | (makerRebateBps << 16) | (uint256(uint160(recipient)) << 32);
        m &= ~(uint256(1) << 157);
        if (takerFeeBps != 0) m |= 1 << 157;
        _markets[market] = m;
        emit FeesSet(market, takerFeeBps, makerRebateBps, recipient);
    }

    /// @notice Pay the accrued fees of `market` to its fee recipient (the recipient only).
    function claimFees(uint256 market) external {
        address recipient = address(uint160(_fees[market] >> 32));
        if (msg.sender != recipient || recipient == address(0)) revert NotAdmin();
        uint256 amount = feesAccrued[market];
        feesAccrued[market] = 0;
        if (amount != 0) {
            _holdingsOut(market, 0, amount);
            _push(quoteToken[market], amount);
        }
        emit FeesClaimed(market, recipient, amount);
    }

    /// Funds leave the market: take them off its holdings (which include them).
    function _holdingsOut(uint256 market, uint256 baseAmount, uint256 quoteAmount) private {
        // Unchecked: the holdings include the amounts (an account's free balance or the
        // unclaimed fees), and neither part borrows from the other.
        unchecked {
            _held[market] -= (baseAmount << 128) | quoteAmount;
        }
    }

    function _setStatus(uint256 market, uint256 status) private {
        uint256 m = _markets[market];
        if (m == 0) revert UnknownMarket();
        if ((m >> 158) & 3 == DELISTED) revert MarketDelisted(market);
        _markets[market] = (m & ~(uint256(3) << 158)) | (status << 158);
        emit MarketStatus(market, status);
    }

    function _decimalsOf(address token) private view returns (uint256 d) {
        if (token.code.length == 0) revert BadToken(token);
        (bool ok, bytes memory ret) = token.staticcall(abi.encodeWithSelector(0x313ce567));
        if (!ok || ret.length < 32) revert BadToken(token);
        d = abi.decode(ret, (uint256));
        if (d > MAX_DECIMALS) revert BadToken(token);
    }

    // ================================================================== funds
    /// @notice Move tokens into the caller's account in `market`. Tokens that deliver
    /// less than the amount (fee on transfer) are refused, so is a deposit that would take
    /// the market's holdings past 2**128 - 1 quote or 2**120 - 1 base units (`BadAmount`):
    /// balances are packed in those widths, and a credit from a fill, a cancel or a fee
    /// rebate can then never overflow one.
    function deposit(uint256 market, uint256 baseAmount, uint256 quoteAmount) external {
        uint256 mkt = _markets[market];
        if (mkt == 0) revert UnknownMarket();
        if ((mkt >> 158) & 3 == DELISTED) revert MarketDelisted(market);
        if (baseAmount == 0 && quoteAmount == 0) revert BadAmount();
        uint256 sk = (market << 160) | uint256(uint160(msg.sender));
        uint256 seat = _seats[sk];
        uint256 trader = seat >> 232;
        if (trader == 0) {
            trader = traderIndex[msg.sender];
            if (trader == 0) {
                trader = ++traderCount;
                if (trader >= 1 << 24) revert NoAccount();
                traderIndex[msg.sender] = trader;
                traderAddress[trader] = msg.sender;
            }
            _seats[sk] = trader << 232;
        }
        uint256 held = _held[market];
        if ((held & U128) + quoteAmount > U128 || ((held >> 128) & U120) + baseAmount > U120) {
            revert BadAmount();
        }
        // Unchecked: the sums fit their fields (just checked; an account holds at most what
        // the market holds), so neither carries into the next.
        unchecked {
            uint256 add = (baseAmount << 128) | quoteAmount;
            _held[market] = (held | SENTINEL) + add;
            _accounts[sk] = (_accounts[sk] | SENTINEL) + add;
        }
        if (baseAmount != 0) _pull(baseToken[market], baseAmount);
        if (quoteAmount != 0) _pull(quoteToken[market], quoteAmount);
        emit Deposit(msg.sender, market, baseAmount, quoteAmount);
    }

    /// @notice Move free tokens out of the caller's account in `market` (any status).
    function withdraw(uint256 market, uint256 baseAmount, uint256 quoteAmount) external {
        if (_markets[market] == 0) revert UnknownMarket();
        uint256 key = (market << 160) | uint256(uint160(msg.sender));
        uint256 acct = _accounts[key];
        if (acct == 0) revert NoAccount();
        uint256 q = acct & U128;
        uint256 b = (acct >> 128) & U120;
        if (q < quoteAmount || b < baseAmount) revert InsufficientBalance();
        _accounts[key] = SENTINEL | ((b - baseAmount) << 128) | (q - quoteAmount);
        _holdingsOut(market, baseAmount, quoteAmount);
        if (baseAmount != 0) _push(baseToken[market], baseAmount);
        if (quoteAmount != 0) _push(quoteToken[market], quoteAmount);
        emit Withdraw(msg.sender, market, baseAmount, quoteAmount);
    }

    function _balanceOf(address token) private view returns (uint256) {
        (bool ok, bytes memory ret) = token.staticcall(abi.encodeWithSelector(0x70a08231, address(this)));
        if (!ok || ret.length < 32) revert TransferFailed();
        return abi.decode(ret, (uint256));
    }

    function _pull(address token, uint256 amount) private {
        uint256 before = _balanceOf(token);
        (bool ok, bytes memory ret) = token.call(
            abi.encodeWithSelector(0x23b872dd, msg.sender, address(this), amount)
        );
        if (!ok || (ret.length != 0 && !abi.decode(ret, (bool)))) revert TransferFailed();
        if (_balanceOf(token) - before != amount) revert FeeOnTransfer(token);
    }

    function _push(address token, uint256 amount) private {
        (bool ok, bytes memory ret) = token.call(abi.encodeWithSelector(0xa9059cbb, msg.sender, amount));
        if (!ok || (ret.length != 0 && !abi.decode(ret, (bool)))) revert TransferFailed();
    }

    // ================================================================== maker
    /// @notice Cancel, place and replace orders of `msg.sender` in one transaction.
    /// Each op is one word (LSB first): clientId 0..63 | price 64..95 | size 96..159 |
    /// side 160 (0 bid, 1 ask) | slot 168..175 | kind 176..183 | oldClientId 184..247.
    ///  - OP_CANCEL  (slot, clientId): cancels the order in `slot` if it is live and has
    ///    `clientId`; anything else is a silent no-op (already filled, never placed...).
    ///  - OP_PLACE   (slot, clientId, side, price, size): post-only limit order.
    ///  - OP_REPLACE (slot, oldClientId -> clientId, side, price, size): an in-place amend.
    ///    Keeps time priority when only the size shrinks at the same price and side.
    /// A placement that would cross, finds its slot busy, lacks funds, is malformed, is
    /// below the market's minimum size, meets a paused or delisted market or would add a
    /// price level to a side that has MAX_LEVELS is rejected on its own (OrderRejected);
    /// the other ops go through. A replace whose new order is rejected has cancelled the old
    /// one (OrderCancelled, then OrderRejected), whatever the reason; only a replace naming
    /// another client id than the slot's live order leaves that order alone
    /// (REJECT_SLOT_BUSY). An op of an unknown kind, and a place or replace with a reserved
    /// bit set (side bits 161..167, bits 248..255), is rejected REJECT_BAD_ORDER rather
    /// than read as something it may not mean; a cancel reads only its slot and client id. Reverts `Expired` once `block.timestamp` is past `deadline` (0: none).
    function requote(uint256 market, uint256[] calldata ops, uint256 deadline) external {
        if (deadline != 0 && block.timestamp > deadline) revert Expired(deadline, block.timestamp);
        Ctx memory c = _open(market, true);
        for (uint256 i = 0; i < ops.length; ++i) {
            uint256 op = ops[i];
            uint256 kind = (op >> 176) & 0xff;
            uint256 slot = (op >> 168) & 0xff;
            if (kind == OP_CANCEL) {
                _cancel(c, slot, op & U64);
            } else if (kind > OP_REPLACE) {
                _reject(c.market, slot, op, REJECT_BAD_ORDER);
            } else if (kind == OP_PLACE) {
                _place(c, slot, op);
            } else {
                _replace(c, slot, op);
            }
        }
        _close(c);
    }

    /// @notice Cancel the live orders of `msg.sender` in the slots set in `slotMask`.
    /// Costs what the owner has: only slots that may hold a live order are read.
    function cancelSlots(uint256 market, uint256 slotMask) public {
        Ctx memory c = _open(market, true);
        slotMask &= c.seat & SLOT_MASK;
        c.seat &= ~slotMask;
        while (slotMask != 0) {
            uint256 slot = _lsb(slotMask);
            unchecked {
                slotMask &= slotMask - 1; // slotMask != 0
            }
            uint256 key = (market << 32) | (c.trader << 8) | slot;
            uint256 ow = _orders[key];
            if (ow & LIVE != 0) {
                // The word keeps its live bit: the cleared seat bit is what makes it gone.
                _unlink(c, ow, (c.trader << 8) | slot);
                _release(c, ow);
                emit OrderCancelled(msg.sender, _info(market, slot, ow));
            }
        }
        _close(c);
    }

    /// @notice Cancel every live order of `msg.sender` in `market`.
    function cancelAll(uint256 market) external {
        cancelSlots(market, SLOT_MASK);
    }

    /// Working state for `msg.sender` in `market`. A take (`withSeat` false) leaves the
    /// seat unread (trader 0) until it meets one of the caller's own orders.
    function _open(uint256 market, bool withSeat) private view returns (Ctx memory c) {
        uint256 mkt = _markets[market];
        if (mkt == 0) revert UnknownMarket();
        uint256 key = (market << 160) | uint256(uint160(msg.sender));
        uint256 acct = _accounts[key];
        if (acct == 0) revert NoAccount();
        uint256 seat = withSeat ? _seats[key] : 0;
        c = Ctx(market, mkt, seat >> 232, acct & U128, (acct >> 128) & U120, seat, mkt, acct, seat);
    }

    function _close(Ctx memory c) private {
        if (c.mkt != c.mkt0) _markets[c.market] = c.mkt;
        uint256 key = (c.market << 160) | uint256(uint160(msg.sender));
        uint256 acct = SENTINEL | (c.base << 128) | c.quote;
        if (acct != c.acct0) _accounts[key] = acct;
        if (c.seat != c.seat0) _seats[key] = c.seat;
    }

    function _cancel(Ctx memory c, uint256 slot, uint256 clientId) private {
        if (slot >= SLOTS || (c.seat >> slot) & 1 == 0) return; // no order in the slot
        uint256 ref = (c.trader << 8) | slot;
        uint256 ow = _orders[(c.market << 32) | ref];
        if (ow & LIVE == 0) {
            c.seat &= ~(1 << slot); // filled: forget the slot
            return;
        }
        if (ow & U64 != clientId) return;
        _unlink(c, ow, ref);
        _release(c, ow);
        c.seat &= ~(1 << slot); // the word keeps its live bit; the seat bit decides
        emit OrderCancelled(msg.sender, _info(c.market, slot, ow));
    }

    function _place(Ctx memory c, uint256 slot, uint256 op) private {
        if (slot >= SLOTS) {
            _reject(c.market, slot, op, REJECT_BAD_ORDER);
            return;
        }
        uint256 ref = (c.trader << 8) | slot;
        uint256 key = (c.market << 32) | ref;
        if ((c.seat >> slot) & 1 != 0 && _orders[key] & LIVE != 0) {
            _reject(c.market, slot, op, REJECT_SLOT_BUSY);
            return;
        }
        _insert(c, slot, op, key, ref);
    }

    function _replace(Ctx memory c, uint256 slot, uint256 op) private {
        if (slot >= SLOTS) {
            _reject(c.market, slot, op, REJECT_BAD_ORDER);
            return;
        }
        uint256 ref = (c.trader << 8) | slot;
        uint256 key = (c.market << 32) | ref;
        uint256 ow = (c.seat >> slot) & 1 != 0 ? _orders[key] : 0;
        uint256 oldId = (op >> 184) & U64;
        if (ow & LIVE == 0) {
            // The old order is gone (filled, cancelled or never placed): a plain place.
            _insert(c, slot, op, key, ref);
            return;
        }
        if (ow & U64 != oldId) {
            _reject(c.market, slot, op, REJECT_SLOT_BUSY);
            return;
        }
        uint256 side = (op >> 160) & 1;
        uint256 price = (op >> 64) & U32;
        uint256 size = (op >> 96) & U64;
        if (
            side == (ow >> 224) & 1 && price == (ow >> 64) & U32 && size != 0
                && size <= (ow >> 96) & U64 && (c.mkt >> 158) & 3 == OPEN
                && size >= (c.mkt >> 144) & MAX_MIN_SIZE && op & OP_RESERVED == 0
        ) {
            // Same price and side, not larger: amend in place and keep time priority.
            _release(c, ow);
            uint256 amended = (ow & ~(U64 | (U64 << 96))) | (op & U64) | (size << 96);
            _lock(c, amended); // cannot fail: needs no more than was just released
            _orders[key] = amended;
            emit OrderReplaced(msg.sender, _info(c.market, slot, amended) | (oldId << 192));
            return;
        }
        _unlink(c, ow, ref);
        _release(c, ow);
        ow &= ~LIVE;
        uint256 reason = _check(c, op);
        if (reason != 0) {
            c.seat &= ~(1 << slot); // gone: the seat bit decides, the word is left as it is
            emit OrderCancelled(msg.sender, _info(c.market, slot, ow));
            _reject(c.market, slot, op, reason);
            return;
        }
        uint256 nw = _link(c, ref, op);
        _lock(c, nw);
        _orders[key] = nw;
        emit OrderReplaced(msg.sender, _info(c.market, slot, nw) | (oldId << 192));
    }

    /// Place `op` into the free slot at `key`.
    function _insert(Ctx memory c, uint256 slot, uint256 op, uint256 key, uint256 ref) private {
        uint256 reason = _check(c, op);
        if (reason != 0) {
            _reject(c.market, slot, op, reason);
            return;
        }
        uint256 nw = _link(c, ref, op);
        _lock(c, nw);
        _orders[key] = nw;
        c.seat |= 1 << slot;
        emit OrderPlaced(msg.sender, _info(c.market, slot, nw));
    }

    /// 0 if `op` can rest in the book, else the reject reason.
    function _check(Ctx memory c, uint256 op) private view returns (uint256) {
        if (op & OP_RESERVED != 0) return REJECT_BAD_ORDER;
        if ((c.mkt >> 158) & 3 != OPEN) return REJECT_CLOSED;
        uint256 price = (op >> 64) & U32;
        uint256 size = (op >> 96) & U64;
        if (price == 0 || price > MAX_TICK || size == 0) return REJECT_BAD_ORDER;
        if (size < (c.mkt >> 144) & MAX_MIN_SIZE) return REJECT_TOO_SMALL;
        uint256 isAsk = (op >> 160) & 1;
        // Unchecked: price <= MAX_TICK < 2**32, size < 2**64, tickValue < 2**54 and
        // lotUnits < 2**88.
        unchecked {
            if (isAsk == 0) {
                if (c.quote < price * size * (c.mkt & U54)) return REJECT_FUNDS;
            } else if (c.base < size * ((c.mkt >> 56) & U88)) {
                return REJECT_FUNDS;
            }
        }
        uint256 reason = _crosses(c, isAsk, price);
        if (reason != 0) return reason;
        // A full side takes orders only at its existing levels (read only when it is full).
        if ((isAsk == 0 ? (c.mkt >> 224) & U16 : c.mkt >> 240) == MAX_LEVELS) {
            (bool has,,) = _hasLevel(c.market, isAsk, price, c.mkt);
            if (!has) return REJECT_LEVEL_CAP;
        }
        return 0;
    }

    function _reject(uint256 market, uint256 slot, uint256 op, uint256 reason) private {
        uint256 info = (op & ((1 << 161) - 1)) | (slot << 168) | (market << 176) | (reason << 192);
        emit OrderRejected(msg.sender, info);
    }

    function _info(uint256 market, uint256 slot, uint256 ow) private pure returns (uint256) {
        return (ow & ((1 << 160) - 1)) | (((ow >> 224) & 1) << 160) | (slot << 168) | (market << 176);
    }

    function _lock(Ctx memory c, uint256 ow) private pure {
        uint256 size = (ow >> 96) & U64;
        uint256 v;
        // Unchecked: a price < 2**32, a size < 2**64, tickValue < 2**54, lotUnits < 2**88.
        if ((ow >> 224) & 1 == 0) {
            unchecked {
                v = ((ow >> 64) & U32) * size * (c.mkt & U54);
            }
            c.quote -= v;
        } else {
            unchecked {
                v = size * ((c.mkt >> 56) & U88);
            }
            c.base -= v;
        }
    }

    function _release(Ctx memory c, uint256 ow) private pure {
        uint256 size = (ow >> 96) & U64;
        uint256 v;
        // Unchecked: as in _lock.
        if ((ow >> 224) & 1 == 0) {
            unchecked {
                v = ((ow >> 64) & U32) * size * (c.mkt & U54);
            }
            c.quote += v;
        } else {
            unchecked {
                v = size * ((c.mkt >> 56) & U88);
            }
            c.base += v;
        }
    }

    // ================================================================== book structure
    function _sideKey(uint256 market, uint256 isAsk) private pure returns (uint256) {
        return (market << 33) | (isAsk << 32);
    }

    /// Level word key and bit offset of tick `t`: in the ring (key by `t % RING_TICKS`,
    /// the same words for every tick a moving quote visits) or in the overflow book (`x`,
    /// key by the tick itself).
    function _lkey(uint256 market, uint256 isAsk, uint256 t, bool x) private pure returns (uint256, uint256) {
        if (!x) t %= RING_TICKS;
        return (_sideKey(market, isAsk) | (t >> 2), (t & 3) << 6);
    }

    /// Where the level at tick `t` lives (the overflow book if the ring entry of its residue
    /// holds another tick or nothing), with its word key, bit offset and word.
    function _levelOf(uint256 market, uint256 isAsk, uint256 t, uint256 m)
        private
        view
        returns (bool x, uint256 lk, uint256 sh, uint256 lw)
    {
        (lk, sh) = _lkey(market, isAsk, t, false);
        lw = _levels[lk];
        if (m & (XBID << isAsk) == 0) return (false, lk, sh, lw); // no overflow level on the side
        uint256 head = (lw >> sh) & U32;
        if (head != 0 && (_orders[(market << 32) | head] >> 64) & U32 == t) return (false, lk, sh, lw);
        x = true;
        (lk, sh) = _lkey(market, isAsk, t, true);
        lw = _xlevels[lk];
    }

    /// `_levelOf` packed for a take: (lk | sh << 64 | x << 72, level word).
    function _locate(uint256 market, uint256 isAsk, uint256 t, uint256 m) private view returns (uint256, uint256) {
        (bool x, uint256 lk, uint256 sh, uint256 lw) = _levelOf(market, isAsk, t, m);
        return (lk | (sh << 64) | (x ? 1 << 72 : 0), lw);
    }

    /// Is there a level at tick `t`, and where (as `_locate`)? Reads the words a take of
    /// that level reads anyway, so a take at an exact best-price hint reads no bitmap word.
    function _hasLevel(uint256 market, uint256 isAsk, uint256 t, uint256 m)
        private
        view
        returns (bool, uint256 loc, uint256 lw)
    {
        (loc, lw) = _locate(market, isAsk, t, m);
        uint256 head = (lw >> ((loc >> 64) & U8)) & U32;
        if (head == 0) return (false, 0, 0);
        bool ok = loc >> 72 != 0 || (_orders[(market << 32) | head] >> 64) & U32 == t;
        return ok ? (true, loc, lw) : (false, 0, 0);
    }

    /// @notice Pre-pay the ring's level and bitmap words that ticks `fromTick` to `toTick`
    /// map to (at most 4,096 ticks a call), on both sides. The ring holds RING_TICKS
    /// consecutive ticks, so once every residue is paid for (for example ticks 1 to
    /// RING_TICKS, in a few calls) quoting anywhere, a trend included, writes no fresh
    /// storage slot for levels. Anyone may pay for it; it changes no order or balance.
    function warm(uint256 market, uint256 fromTick, uint256 toTick) external {
        if (_markets[market] == 0) revert UnknownMarket();
        if (fromTick == 0 || fromTick > toTick || toTick > MAX_TICK || toTick - fromTick >= 4096) {
            revert BadAmount();
        }
        if (toTick - fromTick >= RING_TICKS) toTick = fromTick + RING_TICKS - 1;
        // An empty level is a zero head; its tail is only read while the head is set.
        uint256 stale = (U32 << 32) | (U32 << 96) | (U32 << 160) | (U32 << 224);
        for (uint256 side = 0; side < 2; ++side) {
            uint256 sk = _sideKey(market, side);
            // RING_TICKS is a multiple of 4: a level word holds ticks 4k..4k+3 of the ring
            for (uint256 t = fromTick & ~uint256(3); t <= toTick; t += 4) {
                uint256 lk = sk | ((t % RING_TICKS) >> 2);
                if (_levels[lk] == 0) _levels[lk] = stale;
            }
        }
        uint256 last = toTick / TPW;
        if (last - fromTick / TPW >= RING_WORDS) last = fromTick / TPW + RING_WORDS - 1;
        for (uint256 w = fromTick / TPW; w <= last; ++w) {
            uint256 bk = (market << 32) | (w % RING_WORDS);
            if (_bitmaps[bk] == 0) _bitmaps[bk] = SENTINEL;
        }
    }

    /// Append order `ref` (described by op) at the tail of its level; returns the order word.
    /// The level goes in the ring entry of its residue unless another tick holds it, the
    /// tick already has a level in the overflow book, or the tick is more than RING_TICKS / 2
    /// behind the side's best price (`_far`): then in the overflow book. That last rule keeps
    /// the ring's levels of a side within half a ring of the top of the book, where quotes are:
    /// a far level cannot take the ring entry of a tick a quote will need when the market
    /// moves there (which would send those quotes to fresh overflow slots), and it cannot be
    /// a ring alias that every scan from the top has to read and skip (two reads each).
    function _link(Ctx memory c, uint256 ref, uint256 op) private returns (uint256) {
        uint256 isAsk = (op >> 160) & 1;
        uint256 price = (op >> 64) & U32;
        uint256 lk;
        uint256 sh;
        unchecked {
            uint256 res = price % RING_TICKS;
            lk = (c.market << 33) | (isAsk << 32) | (res >> 2);
            sh = (res & 3) << 6;
        }
        uint256 lw = _levels[lk];
        uint256 head = (lw >> sh) & U32;
        uint256 m = c.mkt;
        bool xs = m & (XBID << isAsk) != 0;
        // Far ahead of the ring: more than a bitmap word past the word of the side's ring
        // bound (its hint while it has no overflow level). Such a level goes to the overflow
        // book, counted apart from the side's other overflow levels, so its cancel moves no
        // bound of the side: the hint comes back to them once the side has no such level.
        uint256 t = (m >> (160 + (isAsk << 5))) & U32;
        uint256 b = t;
        uint256 n;
        if (xs) {
            n = _xcount[c.market];
            b = (n >> (128 + (isAsk << 5))) & U32;
        }
        bool ahead;
        // Unchecked: ticks and hints are below 2**32.
        unchecked {
            ahead = isAsk == 0 ? b != 0 && price / TPW > b / TPW + 1 : b != NO_ASK && price / TPW + 1 < b / TPW;
        }
        bool x = ahead;
        if (head != 0) {
            // the tail order's price is the tick holding the ring entry
            x = (_orders[(c.market << 32) | ((lw >> (sh + 32)) & U32)] >> 64) & U32 != price;
        } else if (!x) {
            // a level in the overflow book at `price`? Not past the side's overflow bound while
            // the side has no level placed far ahead (that bound is then valid).
            if (
                xs
                    && (
                        (n >> (192 + (isAsk << 4))) & U16 != 0
                            || (isAsk == 0 ? price <= (n >> 64) & U32 : price >= (n >> 96) & U32)
                    )
            ) {
                (uint256 xk, uint256 xsh) = _lkey(c.market, isAsk, price, true);
                x = (_xlevels[xk] >> xsh) & U32 != 0;
            }
            // Far behind the side's best price (see `_far`); a tick within half a ring of the
            // hint, or of the ring bound, needs no scan (a new best is never far behind; an
            // empty side's hint or ring bound, 0 or NO_ASK, makes no tick far).
            uint256 q = t;
            if (xs && (isAsk == 0 ? b != 0 : b != NO_ASK)) {
                q = _ringStart(b, isAsk);
                if (isAsk == 0 ? q > t : q < t) q = t;
            }
            // Unchecked: ticks and hints are below 2**32.
            unchecked {
                if (!x && (isAsk == 0 ? price + RING_TICKS / 2 < q : price > q + RING_TICKS / 2)) {
                    x = _far(c, isAsk, price);
                }
            }
        }
        uint256 prev;
        if (x) {
            (lk, sh) = _lkey(c.market, isAsk, price, true);
            lw = _xlevels[lk];
            (prev, lw) = _append(lw, sh, c.market, ref);
            _xlevels[lk] = lw;
            // an order joining a level takes its kind from the level's other orders
            if (prev != 0) ahead = _orders[(c.market << 32) | prev] & AHEAD != 0;
        } else {
            ahead = false;
            (prev, lw) = _append(lw, sh, c.market, ref);
            _levels[lk] = lw;
        }
        if (prev == 0) _setBit(c, isAsk, price, x, ahead);
        return SENTINEL | LIVE | (x ? XLEVEL : 0) | (ahead ? AHEAD : 0) | (isAsk << 224) | (prev << 160)
            | (op & ((1 << 160) - 1));
    }

    /// Is a new level at `price`, more than RING_TICKS / 2 behind its side's best-price hint
    /// (`_link` checks that), as far behind the side's best price? The hint is only a bound
    /// (a cancel can leave it far below the best ask or above the best bid), so this scans
    /// from the hint to `price` and keeps what the scan proved in the hint: a stale hint does
    /// not send honest levels to fresh overflow slots, and the exact hint it leaves costs
    /// later levels no scan. A scan that gives up answers from the bound it reached (far
    /// unless within RING_TICKS / 2 of it), so a level in the ring is always within half a
    /// ring of the best, and the next call goes on from that bound.
    function _far(Ctx memory c, uint256 isAsk, uint256 price) private view returns (bool) {
        (, uint256 t) = _tighten(c, isAsk, price);
        // Unchecked: ticks and hints are below 2**32.
        unchecked {
            return isAsk == 0 ? price + RING_TICKS / 2 < t : price > t + RING_TICKS / 2;
        }
    }

    /// Append `ref` to the level at bit offset `sh` of level word `lw`; returns the previous
    /// tail (0: the level was empty) and the new level word.
    function _append(uint256 lw, uint256 sh, uint256 market, uint256 ref) private returns (uint256 prev, uint256) {
        if ((lw >> sh) & U32 == 0) {
            lw = (lw & ~(U64 << sh)) | (ref << sh) | (ref << (sh + 32));
        } else {
            prev = (lw >> (sh + 32)) & U32;
            uint256 tk = (market << 32) | prev;
            _orders[tk] = _orders[tk] | (ref << 192);
            lw = (lw & ~(U32 << (sh + 32))) | (ref << (sh + 32));
        }
        return (prev, lw);
    }

    /// Remove live order `ow` (reference `ref`) from its level.
    function _unlink(Ctx memory c, uint256 ow, uint256 ref) private {
        uint256 isAsk = (ow >> 224) & 1;
        uint256 price = (ow >> 64) & U32;
        bool x = ow & XLEVEL != 0;
        uint256 r = x ? price : price % RING_TICKS;
        uint256 lk = (c.market << 33) | (isAsk << 32) | (r >> 2);
        uint256 sh = (r & 3) << 6;
        mapping(uint256 => uint256) storage lv = x ? _xlevels : _levels;
        uint256 lw = lv[lk];
        uint256 head = (lw >> sh) & U32;
        uint256 tail = (lw >> (sh + 32)) & U32;
        uint256 prev = (ow >> 160) & U32;
        uint256 next = (ow >> 192) & U32;
        if (head == ref) {
            // The next order's prev pointer goes stale; it is only read for non-head orders.
            head = next;
        } else {
            uint256 pk = (c.market << 32) | prev;
            _orders[pk] = (_orders[pk] & ~(U32 << 192)) | (next << 192);
            if (next != 0) {
                uint256 nk = (c.market << 32) | next;
                _orders[nk] = (_orders[nk] & ~(U32 << 160)) | (prev << 160);
            } else {
                tail = prev;
            }
        }
        // An emptied level keeps its stale tail so the word never returns to zero.
        lv[lk] = (lw & ~(U64 << sh)) | (head << sh) | (tail << (sh + 32));
        if (head == 0) _clearBit(c, isAsk, price, x, ow & AHEAD != 0);
    }

    /// A level appeared at `price`: its bitmap bit (ring or overflow book), the side's level
    /// count, the best-price hint and, while the side has overflow levels, its bounds in the
    /// overflow count word: the overflow bound for an overflow level, the ring bound for a ring
    /// level (the side's first overflow level starts the ring bound at the side's hint).
    function _setBit(Ctx memory c, uint256 isAsk, uint256 price, bool x, bool ahead) private {
        uint256 bit;
        uint256 ss = isAsk << 5;
        uint256 m = c.mkt;
        bool xs = m & (XBID << isAsk) != 0;
        unchecked {
            bit = 1 << ((isAsk << 7) + price % TPW); // isAsk <= 1, price % TPW < 127
        }
        if (x) {
            uint256 bk = (c.market << 32) | (price / TPW);
            _xbitmaps[bk] = _xbitmaps[bk] | SENTINEL | bit;
        } else {
            uint256 bk = (c.market << 32) | ((price / TPW) % RING_WORDS);
            _bitmaps[bk] = _bitmaps[bk] | SENTINEL | bit;
        }
        if (x || xs) {
            uint256 n = _xcount[c.market];
            uint256 n0 = n;
            uint256 rs = 128 + ss; // the side's ring bound
            // the side's first overflow level: its hint bounds the ring's levels
            if (!xs) n = (n & ~(U32 << rs)) | (((m >> (160 + ss)) & U32) << rs);
            uint256 bs = x ? 64 + ss : rs; // the bound this level may move
            uint256 b = (n >> bs) & U32;
            uint256 as_ = 192 + (isAsk << 4); // the side's count of levels placed far ahead
            // An overflow level moves the overflow bound to its tick (one placed far ahead of
            // the ring only counts: the hint bounds it); a ring level moves the ring bound only
            // from a word past the bound's (it counts in whole words).
            uint256 p = price;
            if (!x) (p, b) = (price / TPW, b / TPW);
            // Unchecked: a side has at most MAX_LEVELS < 2**16 levels.
            unchecked {
                if (ahead) {
                    n += 1 << as_;
                } else if (
                    (x && ((n >> ss) & U32) == ((n >> as_) & U16)) || (isAsk == 0 ? p > b : p < b)
                ) {
                    n = (n & ~(U32 << bs)) | (price << bs);
                }
                if (x) n = SENTINEL | (n + (1 << ss));
            }
            if (n != n0) _xcount[c.market] = n;
            m |= x ? XBID << isAsk : 0;
        }
        // Unchecked: the level counters are incremented only below MAX_LEVELS (`_check`
        // rejects an order that would add a level to a full side; the revert is a guard).
        unchecked {
            if (isAsk == 0) {
                if ((m >> 224) & U16 == MAX_LEVELS) revert LevelCap(c.market, 0);
                if (price > (m >> 160) & U32) m = (m & ~(U32 << 160)) | (price << 160);
                m += 1 << 224;
            } else {
                if (m >> 240 == MAX_LEVELS) revert LevelCap(c.market, 1);
                if (price < (m >> 192) & U32) m = (m & ~(U32 << 192)) | (price << 192);
                m += 1 << 240;
            }
        }
        c.mkt = m;
    }

    /// A level at `price` emptied: its bitmap bit, the side's level count, its bounds in the
    /// overflow count word while it has overflow levels, and the best-price hint.
    function _clearBit(Ctx memory c, uint256 isAsk, uint256 price, bool x, bool ahead) private {
        uint256 bit = price % TPW;
        uint256 ss = isAsk << 5;
        uint256 word;
        uint256 m = c.mkt;
        uint256 n; // the overflow count word, read while the side has overflow levels
        // Unchecked: isAsk <= 1 and bit < 127 keep the bit index below 255; the overflow
        // count of the side is >= 1 while one of its levels is being cleared, the side's
        // level count >= 1.
        unchecked {
            if (x) {
                uint256 bk = (c.market << 32) | (price / TPW);
                _xbitmaps[bk] = _xbitmaps[bk] & ~(1 << ((isAsk << 7) + bit));
            } else {
                uint256 bk = (c.market << 32) | ((price / TPW) % RING_WORDS);
                word = _bitmaps[bk] & ~(1 << ((isAsk << 7) + bit));
                _bitmaps[bk] = word;
            }
            if (isAsk == 0) m -= 1 << 224;
            else m -= 1 << 240;
        }
        bool xs = m & (XBID << isAsk) != 0;
        // Unchecked: bit < 127, base = price - bit >= 0, base - 1 only when base != 0, and
        // base + 127 <= MAX_TICK + 127 fit a word; price >= 1, price + 1 < 2**32.
        unchecked {
            word = (word >> (isAsk << 7)) & U127; // this side's ticks of the word
            uint256 base = price - bit;
            uint256 hs = 160 + ss;
            uint256 best = (m >> hs) & U32;
            uint256 left = isAsk == 0 ? (m >> 224) & U16 : m >> 240;
            if (!xs) {
                // With no overflow level the ring's bits of this side are all there is: the
                // side's next ring tick past `price` in this word, else the word's end, bounds
                // the side (a bit may stand for an alias tick a ring further on, which only
                // makes the bound lower).
                if (price == best) {
                    if (isAsk == 0) {
                        uint256 below = word & ((1 << bit) - 1);
                        best = below != 0 ? base + _msb(below) : (base == 0 ? 0 : base - 1);
                    } else {
                        uint256 above = bit == TPW - 1 ? 0 : word & ~((2 << bit) - 1);
                        best = above != 0 ? base + _lsb(above) : base + TPW;
                    }
                }
            } else {
                n = _xcount[c.market];
                uint256 n0 = n;
                uint256 rs = 128 + ss;
                uint256 rb = (n >> rs) & U32;
                uint256 as_ = 192 + (isAsk << 4);
                if (x) {
                    n -= 1 << ss;
                    uint256 bs = 64 + ss;
                    if (ahead) n -= 1 << as_;
                    // the bound moves off a level that empties
                    else if ((n >> bs) & U32 == price) n = (n & ~(U32 << bs)) | ((isAsk == 0 ? price - 1 : price + 1) << bs);
                } else if (left == (n >> ss) & U32) {
                    rb = isAsk == 0 ? 0 : NO_ASK; // the ring holds none of the side's levels
                } else if (word == 0 && rb / TPW == price / TPW) {
                    // the bound's word holds no ring level of the side any more: the next word
                    rb = isAsk == 0 ? (base == 0 ? 0 : base - 1) : base + TPW;
                }
                n = (n & ~(U32 << rs)) | (rb << rs);
                if (n != n0) _xcount[c.market] = n;
                if (price == best) best = isAsk == 0 ? price - 1 : price + 1;
                // With no level placed far ahead, the ring bound and (while it has levels) the
                // overflow bound bound the side; else only the hint bounds those levels.
                uint256 cnt = (n >> ss) & U32;
                if (cnt == 0) m &= ~(XBID << isAsk); // no overflow level left
                if ((n >> as_) & U16 == 0) {
                    uint256 sb = _ringStart(rb, isAsk);
                    if (cnt != 0) {
                        uint256 xb = (n >> (64 + ss)) & U32;
                        sb = isAsk == 0 ? (xb > sb ? xb : sb) : (xb < sb ? xb : sb);
                    }
                    if (isAsk == 0 ? sb < best : sb > best) best = sb;
                }
            }
            if (left == 0) best = isAsk == 0 ? 0 : NO_ASK;
            m = (m & ~(U32 << hs)) | (best << hs);
        }
        c.mkt = m;
    }

    /// The ring bound `rb` of a side as a tick: it counts in whole bitmap words, so no ring ask
    /// lies below the first tick of its word, no ring bid above the last.
    function _ringStart(uint256 rb, uint256 isAsk) private pure returns (uint256) {
        unchecked {
            return isAsk == 0 ? rb / TPW * TPW + TPW - 1 : rb / TPW * TPW;
        }
    }

    /// Does a post-only order at `price` on side `isAsk` cross the other side? 0 if not,
    /// REJECT_CROSS if it does, REJECT_SCAN if the scan gave up after MAX_SCAN_WORDS reads
    /// (neither a cross nor a placement: a resting order that crosses would be a locked
    /// book). Tightens the opposite best-price hint to what the scan proved while looking,
    /// so a give-up is progress that the next call continues from.
    function _crosses(Ctx memory c, uint256 isAsk, uint256 price) private view returns (uint256) {
        uint256 m = c.mkt;
        if (isAsk == 0) {
            if (m >> 240 == 0 || price < (m >> 192) & U32) return 0;
        } else if ((m >> 224) & U16 == 0 || price > (m >> 160) & U32) {
            return 0;
        }
        (bool found, uint256 t) = _tighten(c, 1 - isAsk, price);
        if (!found && (isAsk == 0 ? t > price : t < price)) return 0;
        return found ? REJECT_CROSS : REJECT_SCAN;
    }

    /// Scan `side` from its best-price hint to `price` (up for asks, down for bids) with
    /// MAX_SCAN_WORDS reads and keep what the scan proved as the hint: the best price if
    /// found, else the bound the scan reached (one past `price` if it scanned all the way).
    function _tighten(Ctx memory c, uint256 side, uint256 price) private view returns (bool found, uint256 t) {
        uint256 m = c.mkt;
        uint256 hs = 160 + (side << 5); // the side's hint
        if (side == 0) (found, t,) = _scanDown(c.market, 0, m, (m >> hs) & U32, price, MAX_SCAN_WORDS);
        else (found, t,) = _scanUp(c.market, 1, m, (m >> hs) & U32, price, MAX_SCAN_WORDS);
        c.mkt = (m & ~(U32 << hs)) | (t << hs);
    }

    /// Lowest tick in [from, to] with a level on `side`, from at most `maxReads` storage
    /// reads: the ring, then (if the side has any) the overflow book below what the ring
    /// gave. Returns (true, tick, reads) or (false, a lower bound for that tick, reads):
    /// to + 1 when all of [from, to] was scanned, else the furthest tick the scan proved
    /// empty on both, so a caller that keeps it as its hint goes on from there next time.
    /// With overflow levels the scan first reads the side's bounds (overflow count word):
    /// the ring part starts at the ring bound, so ring levels far from a stale hint cost no
    /// alias walk, and RING_WORDS + 2 reads are kept for the overflow book (its bitmap words
    /// from the side's overflow bound on): a ring give-up spans at most one pass
    /// (RING_TICKS), so the overflow scan below it completes and the give-up still moves the
    /// bound.
    function _scanUp(uint256 market, uint256 side, uint256 m, uint256 from, uint256 to, uint256 maxReads)
        private
        view
        returns (bool f1, uint256 t1, uint256 used)
    {
        bool xs = m & (XBID << side) != 0;
        uint256 n;
        uint256 rf = from;
        if (xs) {
            n = _xcount[market];
            used = 1;
            if (maxReads <= 1) return (false, from, used);
            uint256 rb = _ringStart((n >> (128 + (side << 5))) & U32, side); // no ring level below
            if (rb > rf) rf = rb;
        }
        if (rf > to) {
            t1 = to + 1;
        } else {
            uint256 keep = xs && maxReads > 2 * RING_WORDS ? RING_WORDS + 2 : 0;
            uint256 u;
            (f1, t1, u) = _ringUp(market, side, rf, to, maxReads - keep - used);
            used += u;
        }
        // No ring level in [from, t1); one at t1 if f1.
        if (!xs || t1 == from) return (f1, t1, used);
        // no overflow level below (the hint, while one placed far ahead of the ring is there)
        uint256 low = (n >> (192 + (side << 4))) & U16 != 0 ? from : (n >> (64 + (side << 5))) & U32;
        if (low >= t1) return (f1, t1, used);
        if (used >= maxReads) return (false, low > from ? low : from, used);
        (bool f2, uint256 t2, uint256 u2) = _xscanUp(market, side, low > from ? low : from, t1 - 1, maxReads - used);
        used += u2;
        if (f2) return (true, t2, used); // below the ring's answer
        if (t2 >= t1) return (f1, t1, used); // the overflow book is empty below t1 too
        return (false, t2, used);
    }

    /// Highest tick in [to, from] with a level on `side`; the mirror of `_scanUp`: on give-up
    /// (false, an upper bound for that tick), to - 1 when all was scanned.
    function _scanDown(uint256 market, uint256 side, uint256 m, uint256 from, uint256 to, uint256 maxReads)
        private
        view
        returns (bool f1, uint256 t1, uint256 used)
    {
        bool xs = m & (XBID << side) != 0;
        uint256 n;
        uint256 rf = from;
        if (xs) {
            n = _xcount[market];
            used = 1;
            if (maxReads <= 1) return (false, from, used);
            uint256 rb = _ringStart((n >> (128 + (side << 5))) & U32, side); // no ring level above
            if (rb < rf) rf = rb;
        }
        if (rf < to) {
            t1 = to - 1;
        } else {
            uint256 keep = xs && maxReads > 2 * RING_WORDS ? RING_WORDS + 2 : 0;
            uint256 u;
            (f1, t1, u) = _ringDown(market, side, rf, to, maxReads - keep - used);
            used += u;
        }
        // No ring level in (t1, from]; one at t1 if f1.
        if (!xs || t1 == from) return (f1, t1, used);
        // no overflow level above (the hint, while one placed far ahead of the ring is there)
        uint256 high = (n >> (192 + (side << 4))) & U16 != 0 ? from : (n >> (64 + (side << 5))) & U32;
        if (high <= t1) return (f1, t1, used);
        if (used >= maxReads) return (false, high < from ? high : from, used);
        (bool f2, uint256 t2, uint256 u2) = _xscanDown(market, side, high < from ? high : from, t1 + 1, maxReads - used);
        used += u2;
        if (f2) return (true, t2, used); // above the ring's answer
        if (t2 <= t1) return (f1, t1, used); // the overflow book is empty above t1 too
        return (false, t2, used);
    }

    /// The ring's lowest level in [from, to]. One pass over RING_TICKS ticks from `from`
    /// visits every residue once: a set bit at tick p is p's own level, or a level of the
    /// same residue beyond the pass (an alias; its tick, read from its head order, is kept
    /// as a candidate). So the answer is exact after at most RING_WORDS + 1 bitmap words
    /// and two reads per set bit, however stale the best-price hint it starts from.
    function _ringUp(uint256 market, uint256 side, uint256 from, uint256 to, uint256 maxReads)
        private
        view
        returns (bool, uint256, uint256 used)
    {
        uint256 end = to - from >= RING_TICKS ? from + RING_TICKS : to + 1; // scan [from, end)
        uint256 off = side << 7;
        uint256 w = from / TPW;
        uint256 word = (_bitmaps[(market << 32) | (w % RING_WORDS)] >> off) & U127 & ~((1 << (from % TPW)) - 1);
        uint256 far = NONE;
        used = 1;
        while (true) {
            while (word != 0) {
                uint256 p = w * TPW + _lsb(word);
                if (p >= end) break;
                if (used + 2 > maxReads) return (false, p, used);
                (uint256 lk, uint256 sh) = _lkey(market, side, p, false);
                uint256 t = (_orders[(market << 32) | ((_levels[lk] >> sh) & U32)] >> 64) & U32;
                used += 2;
                if (t == p) return (true, p, used); // an alias is a ring further: above p
                if (t > p && t <= to && t < far) far = t;
                word &= word - 1;
            }
            ++w;
            if (w * TPW >= end) break;
            if (used >= maxReads) return (false, w * TPW, used);
            word = (_bitmaps[(market << 32) | (w % RING_WORDS)] >> off) & U127;
            ++used;
        }
        return far != NONE ? (true, far, used) : (false, to + 1, used);
    }

    /// The ring's highest level in [to, from]; the mirror of `_ringUp`.
    function _ringDown(uint256 market, uint256 side, uint256 from, uint256 to, uint256 maxReads)
        private
        view
        returns (bool, uint256, uint256 used)
    {
        // scan (low, from] downwards, low = max(to, from - RING_TICKS + 1) - 1 >= 0
        uint256 low = from - to >= RING_TICKS ? from - RING_TICKS : to - 1;
        uint256 off = side << 7;
        uint256 w = from / TPW;
        uint256 word = (_bitmaps[(market << 32) | (w % RING_WORDS)] >> off) & U127 & ((2 << (from % TPW)) - 1);
        uint256 far = 0;
        used = 1;
        while (true) {
            while (word != 0) {
                uint256 b = _msb(word);
                uint256 p = w * TPW + b;
                if (p <= low) break;
                if (used + 2 > maxReads) return (false, p, used);
                (uint256 lk, uint256 sh) = _lkey(market, side, p, false);
                uint256 t = (_orders[(market << 32) | ((_levels[lk] >> sh) & U32)] >> 64) & U32;
                used += 2;
                if (t == p) return (true, p, used); // an alias is a ring further: below p
                if (t < p && t >= to && t > far) far = t;
                word &= ~(1 << b);
            }
            if (w == 0 || w * TPW <= low + 1) break;
            --w;
            if (used >= maxReads) return (false, w * TPW + TPW - 1, used);
            word = (_bitmaps[(market << 32) | (w % RING_WORDS)] >> off) & U127;
            ++used;
        }
        return far != 0 ? (true, far, used) : (false, to - 1, used);
    }

    /// Lowest set tick of the overflow book in [from, to], reading at most `maxWords`
    /// bitmap words. Returns (true, tick, words read) or (false, a lower bound for the lowest
    /// set tick, words read): to + 1 when all of [from, to] was scanned, less if the scan
    /// gave up.
    function _xscanUp(uint256 market, uint256 side, uint256 from, uint256 to, uint256 maxWords)
        private
        view
        returns (bool, uint256, uint256)
    {
        uint256 mk = market << 32;
        uint256 off = side << 7;
        uint256 w = from / TPW;
        uint256 bit = from % TPW;
        for (uint256 n = 1; n <= maxWords; ++n) {
            uint256 word = (_xbitmaps[mk | w] >> off) & U127 & ~((1 << bit) - 1);
            if (word != 0) {
                uint256 t = w * TPW + _lsb(word);
                return (t <= to, t, n);
            }
            ++w;
            bit = 0;
            if (w * TPW > to) return (false, to + 1, n);
        }
        return (false, w * TPW, maxWords);
    }

    /// Highest set tick of the overflow book in [to, from]; the mirror of `_xscanUp`.
    function _xscanDown(uint256 market, uint256 side, uint256 from, uint256 to, uint256 maxWords)
        private
        view
        returns (bool, uint256, uint256)
    {
        uint256 mk = market << 32;
        uint256 off = side << 7;
        uint256 w = from / TPW;
        uint256 bit = from % TPW;
        for (uint256 n = 1; n <= maxWords; ++n) {
            uint256 word = (_xbitmaps[mk | w] >> off) & U127 & ((2 << bit) - 1);
            if (word != 0) {
                uint256 t = w * TPW + _msb(word);
                return (t >= to, t, n);
            }
            if (w == 0 || w * TPW <= to) return (false, to - 1, n);
            --w;
            bit = TPW - 1;
        }
        return (false, w * TPW + TPW - 1, maxWords);
    }

    // ================================================================== taker
    /// @notice Immediate-or-cancel order against the book, price-time priority.
    /// `side` 0 buys (takes asks up to `limitPrice`), 1 sells (takes bids down to it).
    /// Settles from the caller's account in `market`; stops early when the account cannot
    /// pay for more, after `maxLevels` price levels or `maxOrders` maker orders (0: 32 and
    /// 64), or when a fixed budget of empty bitmap words has been scanned. A resting order
    /// of the caller met on the way is cancelled (self-trade prevention; it counts as an
    /// order). Reverts `Expired` once `block.timestamp` is past `deadline` (0: none).
    /// In a market with fees the taker pays the fee in force when the take is mined (at most
    /// 100 bps, see `setFees`) on the quote amount; a buyer fills only what it can pay
    /// with the fee. Returns lots filled and quote units paid or received (fee excluded).
    function take(
        uint256 market,
        uint256 side,
        uint256 limitPrice,
        uint256 size,
        uint256 maxLevels,
        uint256 maxOrders,
        uint256 deadline
    ) external returns (uint256 filled, uint256 quoteAmount) {
        if (deadline != 0 && block.timestamp > deadline) revert Expired(deadline, block.timestamp);
        if (side > 1) revert BadSide();
        if (limitPrice > MAX_TICK) limitPrice = MAX_TICK;
        if (limitPrice == 0) limitPrice = 1;
        if (maxLevels == 0) maxLevels = 32;
        if (maxOrders == 0) maxOrders = 64;
        Ctx memory c = _open(market, false);
        uint256 status = (c.mkt >> 158) & 3;
        if (status == PAUSED) revert MarketPaused(market);
        if (status == DELISTED) revert MarketDelisted(market);
        uint256 makerSide;
        unchecked {
            makerSide = 1 - side; // side <= 1
        }
        uint256 left = size;
        uint256 budget = MAX_SCAN_WORDS;
        uint256 fees = (c.mkt >> 157) & 1 != 0 ? _fees[market] : 0;
        uint256 rebates;
        while (left != 0 && maxLevels != 0 && maxOrders != 0 && budget != 0) {
            uint256 m = c.mkt;
            uint256 t;
            uint256 used;
            bool found;
            uint256 loc; // where the level is (see _hasLevel), 0: not looked up yet
            uint256 lw;
            if (side == 0) {
                if (m >> 240 == 0) break;
                uint256 best = (m >> 192) & U32;
                if (best > limitPrice) break;
                (found, loc, lw) = _hasLevel(market, 1, best, m);
                if (found) t = best;
                else (found, t, used) = _scanUp(market, makerSide, m, best, limitPrice, budget);
                c.mkt = (m & ~(U32 << 192)) | (t << 192);
            } else {
                if ((m >> 224) & U16 == 0) break;
                uint256 best = (m >> 160) & U32;
                if (best < limitPrice) break;
                (found, loc, lw) = _hasLevel(market, 0, best, m);
                if (found) t = best;
                else (found, t, used) = _scanDown(market, makerSide, m, best, limitPrice, budget);
                c.mkt = (m & ~(U32 << 160)) | (t << 160);
            }
            unchecked {
                budget -= used; // a scan reads at most `budget` words
            }
            if (!found) {
                if (side == 0 ? t > limitPrice : t < limitPrice) break;
                continue; // the scan gave up part way: go on from the tightened hint
            }
            (uint256 got, uint256 paid, uint256 touched, bool stop, uint256 rebate) =
                _takeLevel(c, makerSide, t, left, maxOrders, fees, loc, lw, quoteAmount);
            rebates += rebate;
            // Unchecked: got <= left, touched <= maxOrders, maxLevels != 0 (loop condition);
            // filled <= size; quoteAmount sums fewer than 2**20 fills (a block) under 2**152.
            unchecked {
                left -= got;
                filled += got;
                quoteAmount += paid;
                maxOrders -= touched;
                --maxLevels;
            }
            if (stop) break;
        }
        if (fees != 0) {
            // The taker's fee on the whole take (a buyer can afford it: _takeLevel leaves the
            // fee owed so far in the account); it covers the makers' rebates, which are
            // rounded down fill by fill.
            uint256 fee = quoteAmount * (fees & U16) / 10000;
            c.quote -= fee;
            feesAccrued[market] += fee - rebates;
            emit TakerFees(market, msg.sender, fee, rebates);
        }
        _close(c);
    }

    /// Take up to `want` lots at tick `t`, touching at most `maxOrders` orders; returns
    /// (lots, quote units, orders touched, taker ran out of funds). `paidBefore` is the quote
    /// the take paid or received at earlier levels (the fee is charged on the whole take).
    function _takeLevel(
        Ctx memory c,
        uint256 makerSide,
        uint256 t,
        uint256 want,
        uint256 maxOrders,
        uint256 fees,
        uint256 loc,
        uint256 lw,
        uint256 paidBefore
    ) private returns (uint256 got, uint256 paid, uint256 touched, bool broke, uint256 rebates) {
        if (loc == 0) (loc, lw) = _locate(c.market, makerSide, t, c.mkt);
        bool x = loc >> 72 != 0;
        uint256 lk = loc & U64;
        uint256 sh = (loc >> 64) & U8;
        uint256 head = (lw >> sh) & U32;
        uint256 unitQuote;
        unchecked {
            unitQuote = t * (c.mkt & U54); // t < 2**32, tickValue < 2**54
        }
        uint256 unitBase = (c.mkt >> 56) & U88;
        // A buyer pays the taker fee on top: afford it lot by lot, rounded up.
        uint256 unitCost = fees == 0 ? unitQuote : unitQuote + (unitQuote * (fees & U16) + 9999) / 10000;
        uint256 makerTrader;
        address maker;
        bool ahead;
        while (head != 0 && got < want && touched < maxOrders) {
            unchecked {
                ++touched; // < maxOrders
            }
            uint256 ok = (c.market << 32) | head;
            uint256 ow = _orders[ok];
            ahead = ow & AHEAD != 0; // the same for every order of the level
            uint256 avail = (ow >> 96) & U64;
            if (head >> 8 != makerTrader) {
                makerTrader = head >> 8;
                maker = traderAddress[makerTrader];
            }
            if (maker == msg.sender) {
                // Self-trade prevention: cancel our own resting order.
                if (c.trader == 0) {
                    // First own order met: read the seat now (a take leaves it unread).
                    c.seat = _seats[(c.market << 160) | uint256(uint160(msg.sender))];
                    c.seat0 = c.seat;
                    c.trader = makerTrader;
                }
                _release(c, ow);
                ow &= ~LIVE;
                _orders[ok] = ow;
                c.seat &= ~(1 << (head & 0xff));
                emit OrderCancelled(msg.sender, _info(c.market, head & 0xff, ow));
                head = (ow >> 192) & U32;
                continue;
            }
            uint256 q;
            uint256 qa;
            uint256 ba;
            // What the taker can afford. A buyer's fee is charged at the end on the whole take,
            // so the fee owed for the fills so far stays in the account: its quote covers it
            // (each fill took at most its lots times unitCost, and the fee of the sum is at
            // most the sum of the fees rounded up), and only the rest buys lots.
            uint256 cap;
            if (makerSide == 0) {
                cap = c.base / unitBase;
            } else if (fees == 0) {
                cap = c.quote / unitCost;
            } else {
                cap = (c.quote - (paidBefore + paid) * (fees & U16) / 10000) / unitCost;
            }
            // Unchecked: got < want; q <= 2**64 lots, unitQuote < 2**88 and unitBase < 2**88
            // keep qa and ba below 2**152.
            unchecked {
                q = want - got;
                if (q > avail) q = avail;
                if (q > cap) {
                    q = cap;
                    broke = true;
                    if (q == 0) break;
                }
                qa = q * unitQuote;
                ba = q * unitBase;
            }
            uint256 ak = (c.market << 160) | uint256(uint160(maker));
            uint256 acct = _accounts[ak];
            // Unchecked: the accounts of a market hold less than 2**128 quote and 2**120
            // base units in all (see `deposit`), so each field of the word stays in its bits.
            unchecked {
                if (fees != 0) {
                    uint256 rebate = qa * ((fees >> 16) & U16) / 10000;
                    acct += rebate;
                    rebates += rebate;
                }
                if (makerSide == 1) {
                    // Maker sold base (already locked) for quote; taker pays quote, gets base.
                    acct += qa;
                } else {
                    acct += ba << 128;
                }
            }
            _accounts[ak] = acct;
            // Unchecked: q <= cap makes qa <= c.quote (unitCost >= unitQuote) and
            // ba <= c.base; the sums stay far below 2**256 (fewer than 2**20 fills fit a
            // block, each under 2**152);
            // q <= avail; got + q <= want.
            unchecked {
                if (makerSide == 1) {
                    c.quote -= qa;
                    c.base += ba;
                } else {
                    c.base -= ba;
                    c.quote += qa;
                }
                avail -= q;
                got += q;
                paid += qa;
            }
            ow = (ow & ~(U64 << 96)) | (avail << 96);
            uint256 info = _info(c.market, head & 0xff, ow);
            // A Fill reports the lots traded in `size` and the maker's remainder in `extra`.
            info = (info & ~(U64 << 96)) | (q << 96) | (avail << 192);
            if (avail == 0) {
                ow &= ~LIVE;
                _orders[ok] = ow;
                head = (ow >> 192) & U32;
            } else {
                _orders[ok] = ow;
            }
            emit Fill(maker, msg.sender, info);
            if (broke) break;
        }
        if (x) _xlevels[lk] = (lw & ~(U32 << sh)) | (head << sh);
        else _levels[lk] = (lw & ~(U32 << sh)) | (head << sh);
        if (head == 0) _clearBit(c, makerSide, t, x, ahead);
    }

    // ================================================================== views
    function getMarket(uint256 market)
        external
        view
        returns (
            address base,
            address quote,
            uint256 tickValue,
            uint256 lotUnits,
            uint256 bestBidHint,
            uint256 bestAskHint,
            uint256 bidLevels,
            uint256 askLevels
        )
    {
        uint256 m = _markets[market];
        if (m == 0) revert UnknownMarket();
        return (
            baseToken[market],
            quoteToken[market],
            m & U54,
            (m >> 56) & U88,
            (m >> 160) & U32,
            (m >> 192) & U32,
            (m >> 224) & U16,
            m >> 240
        );
    }

    /// Fees of `market`: taker fee and maker rebate in basis points, fee recipient.
    function marketFees(uint256 market)
        external
        view
        returns (uint256 takerFeeBps, uint256 makerRebateBps, address recipient)
    {
        uint256 f = _fees[market];
        return (f & U16, (f >> 16) & U16, address(uint160(f >> 32)));
    }

    /// Listing parameters: minimum order size (lots), status (0 open, 1 paused,
    /// 2 delisted) and the token decimals read at listing.
    function marketConfig(uint256 market)
        external
        view
        returns (uint256 minSize, uint256 status, uint256 baseDecimals, uint256 quoteDecimals)
    {
        uint256 m = _markets[market];
        if (m == 0) revert UnknownMarket();
        uint256 d = _decimals[market];
        return ((m >> 144) & MAX_MIN_SIZE, (m >> 158) & 3, d & U8, (d >> 8) & U8);
    }

    function _traderOf(address owner, uint256 market) private view returns (uint256 seat, uint256 trader) {
        if (market > U16) return (0, 0);
        seat = _seats[(market << 160) | uint256(uint160(owner))];
        trader = seat >> 232;
    }

    /// Free (unlocked) balances of `owner` in `market`, in token base units.
    function freeBalances(address owner, uint256 market) public view returns (uint256 base, uint256 quote) {
        if (market > U16) return (0, 0);
        uint256 acct = _accounts[(market << 160) | uint256(uint160(owner))];
        return ((acct >> 128) & U120, acct & U128);
    }

    /// Free and locked balances of `owner` in `market`.
    function balances(address owner, uint256 market)
        external
        view
        returns (uint256 baseFree, uint256 quoteFree, uint256 baseLocked, uint256 quoteLocked)
    {
        (baseFree, quoteFree) = freeBalances(owner, market);
        uint256 m = _markets[market];
        (uint256 mask, uint256 trader) = _traderOf(owner, market);
        mask &= SLOT_MASK;
        while (mask != 0) {
            uint256 slot = _lsb(mask);
            mask &= mask - 1;
            uint256 ow = _orders[(market << 32) | (trader << 8) | slot];
            if (ow & LIVE == 0) continue;
            uint256 size = (ow >> 96) & U64;
            if ((ow >> 224) & 1 == 0) quoteLocked += ((ow >> 64) & U32) * size * (m & U54);
            else baseLocked += size * ((m >> 56) & U88);
        }
    }

    function getOrder(address owner, uint256 market, uint256 slot)
        external
        view
        returns (bool live, uint256 clientId, uint256 side, uint256 price, uint256 size)
    {
        (uint256 seat, uint256 trader) = _traderOf(owner, market);
        if (trader == 0 || slot >= SLOTS) return (false, 0, 0, 0, 0);
        uint256 ow = _orders[(market << 32) | (trader << 8) | slot];
        return (ow & LIVE != 0 && (seat >> slot) & 1 != 0, ow & U64, (ow >> 224) & 1, (ow >> 64) & U32, (ow >> 96) & U64);
    }

    /// Live orders of `owner` in `market`, each packed like an event `info` word.
    function openOrders(address owner, uint256 market) external view returns (uint256[] memory out) {
        (uint256 mask, uint256 trader) = _traderOf(owner, market);
        mask &= SLOT_MASK;
        out = new uint256[](SLOTS);
        uint256 n = 0;
        while (mask != 0) {
            uint256 slot = _lsb(mask);
            mask &= mask - 1;
            uint256 ow = _orders[(market << 32) | (trader << 8) | slot];
            if (ow & LIVE != 0) out[n++] = _info(market, slot, ow);
        }
        assembly ("memory-safe") {
            mstore(out, n)
        }
    }

    /// One page of one side of the book: up to `maxLevels` (at most 1,024) levels from
    /// `fromTick` (0: the best price) outwards, with ticks, total lots and order counts.
    /// `next` is where the next page starts, 0 when the side has no further level. A page
    /// also ends after a fixed budget of bitmap words and of orders, so it never runs out
    /// of gas however the book is spread.
    function depth(uint256 market, uint256 side, uint256 fromTick, uint256 maxLevels)
        external
        view
        returns (uint256[] memory prices, uint256[] memory sizes, uint256[] memory counts, uint256 next)
    {
        uint256 m = _markets[market];
        if (m == 0) revert UnknownMarket();
        if (side > 1) revert BadSide();
        if (maxLevels > 1024) maxLevels = 1024;
        prices = new uint256[](maxLevels);
        sizes = new uint256[](maxLevels);
        counts = new uint256[](maxLevels);
        uint256 n = 0;
        uint256 left = side == 0 ? (m >> 224) & U16 : m >> 240;
        uint256 t = side == 0 ? (m >> 160) & U32 : (m >> 192) & U32;
        if (fromTick != 0) {
            if (side == 0 && fromTick < t) t = fromTick;
            if (side == 1 && fromTick > t) t = fromTick;
        }
        uint256 words = 16 * MAX_SCAN_WORDS;
        uint256 orders = MAX_DEPTH_ORDERS;
        bool done = left == 0 || t == 0 || t > MAX_TICK;
        while (!done && n < maxLevels) {
            if (words == 0 || orders == 0) break;
            bool found;
            uint256 used;
            if (side == 0) {
                (found, t, used) = _scanDown(market, side, m, t, 1, words);
            } else {
                (found, t, used) = _scanUp(market, side, m, t, MAX_TICK, words);
            }
            words -= used;
            if (!found) {
                done = side == 0 ? t == 0 : t > MAX_TICK;
                continue;
            }
            (,, uint256 sh, uint256 lw) = _levelOf(market, side, t, m);
            uint256 ref = (lw >> sh) & U32;
            uint256 s = 0;
            uint256 k = 0;
            while (ref != 0 && k < orders) {
                uint256 ow = _orders[(market << 32) | ref];
                s += (ow >> 96) & U64;
                ++k;
                ref = (ow >> 192) & U32;
            }
            if (ref != 0 && n != 0) break; // order budget ran out: this level starts the next page
            orders -= k;
            prices[n] = t;
            sizes[n] = s;
            counts[n] = k;
            ++n;
            --left;
            if (left == 0 || (side == 0 && t == 1) || (side == 1 && t == MAX_TICK)) {
                done = true;
            } else {
                t = side == 0 ? t - 1 : t + 1;
            }
        }
        next = done ? 0 : t;
        assembly ("memory-safe") {
            mstore(prices, n)
            mstore(sizes, n)
            mstore(counts, n)
        }
    }

    // ================================================================== bit helpers
    function _lsb(uint256 x) private pure returns (uint256 r) {
        unchecked {
            if (x & U128 == 0) { r += 128; x >>= 128; }
            if (x & U64 == 0) { r += 64; x >>= 64; }
            if (x & U32 == 0) { r += 32; x >>= 32; }
            if (x & U16 == 0) { r += 16; x >>= 16; }
            if (x & 0xff == 0) { r += 8; x >>= 8; }
            if (x & 0xf == 0) { r += 4; x >>= 4; }
            if (x & 0x3 == 0) { r += 2; x >>= 2; }
            if (x & 0x1 == 0) { r += 1; }
        }
    }

    function _msb(uint256 x) private pure returns (uint256 r) {
        unchecked {
            if (x >> 128 != 0) { r += 128; x >>= 128; }
            if (x >> 64 != 0) { r += 64; x >>= 64; }
            if (x >> 32 != 0) { r += 32; x >>= 32; }
            if (x >> 16 != 0) { r += 16; x >>= 16; }
            if (x >> 8 != 0) { r += 8; x >>= 8; }
            if (x >> 4 != 0) { r += 4; x >>= 4; }
            if (x >> 2 != 0) { r += 2; x >>= 2; }
            if (x >> 1 != 0) { r += 1; }
        }
    }
}
