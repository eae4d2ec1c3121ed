"""soap"""
