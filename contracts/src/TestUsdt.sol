// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/// @title TestUsdt
/// @notice Plain ERC-20 test token for Coffer's local chains, standing in for
/// tokens without EIP-3009 support (e.g. USDT on BNB Smart Chain, 18 decimals).
///
/// No constructor arguments and no immutables: all state is set by
/// `initialize`, so the runtime bytecode can be placed at an arbitrary address
/// (e.g. with `anvil_setCode`) and initialized there, or deployed normally and
/// then initialized. A single owner may mint.
contract TestUsdt {
    string private _name;
    string private _symbol;
    uint8 private _decimals;
    address private _owner;
    bool private _initialized;

    uint256 private _totalSupply;
    mapping(address => uint256) private _balances;
    mapping(address => mapping(address => uint256)) private _allowances;

    event Transfer(address indexed from, address indexed to, uint256 value);
    event Approval(address indexed owner, address indexed spender, uint256 value);

    modifier onlyOwner() {
        require(msg.sender == _owner, "Ownable: caller is not the owner");
        _;
    }

    /// @notice One-time setup.
    function initialize(
        string calldata tokenName,
        string calldata tokenSymbol,
        uint8 tokenDecimals,
        address tokenOwner
    ) external {
        require(!_initialized, "already initialized");
        require(tokenOwner != address(0), "TestUsdt: owner is the zero address");
        _initialized = true;
        _name = tokenName;
        _symbol = tokenSymbol;
        _decimals = tokenDecimals;
        _owner = tokenOwner;
    }

    function name() external view returns (string memory) {
        return _name;
    }

    function symbol() external view returns (string memory) {
        return _symbol;
    }

    function decimals() external view returns (uint8) {
        return _decimals;
    }

    function owner() external view returns (address) {
        return _owner;
    }

    function totalSupply() external view returns (uint256) {
        return _totalSupply;
    }

    function balanceOf(address account) external view returns (uint256) {
        return _balances[account];
    }

    function allowance(address holder, address spender) external view returns (uint256) {
        return _allowances[holder][spender];
    }

    function approve(address spender, uint256 value) external returns (bool) {
        require(spender != address(0), "ERC20: approve to the zero address");
        _allowances[msg.sender][spender] = value;
        emit Approval(msg.sender, spender, value);
        return true;
    }

    function transfer(address to, uint256 value) external returns (bool) {
        _transfer(msg.sender, to, value);
        return true;
    }

    function transferFrom(address from, address to, uint256 value) external returns (bool) {
        uint256 allowed = _allowances[from][msg.sender];
        require(value <= allowed, "ERC20: transfer amount exceeds allowance");
        _transfer(from, to, value);
        unchecked {
            _allowances[from][msg.sender] = allowed - value;
        }
        return true;
    }

    /// @notice Owner-only minting for tests.
    function mint(address to, uint256 amount) external onlyOwner returns (bool) {
        require(to != address(0), "ERC20: mint to the zero address");
        _totalSupply += amount;
        unchecked {
            // Cannot overflow: a balance never exceeds the total supply.
            _balances[to] += amount;
        }
        emit Transfer(address(0), to, amount);
        return true;
    }

    function _transfer(address from, address to, uint256 value) private {
        require(to != address(0), "ERC20: transfer to the zero address");
        uint256 fromBalance = _balances[from];
        require(value <= fromBalance, "ERC20: transfer amount exceeds balance");
        unchecked {
            _balances[from] = fromBalance - value;
            // Cannot overflow: the sum of balances equals the total supply.
            _balances[to] += value;
        }
        emit Transfer(from, to, value);
    }
}
